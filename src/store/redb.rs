//! The default backend: one redb file in the data dir, one table of sessions
//! keyed by session id, values as JSON.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Backend, StoreOp, StoredSession};

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// File name inside the data dir.
pub const FILE_NAME: &str = "pairgate.redb";

pub struct RedbBackend {
    path: PathBuf,
    /// `None` after a failed write: redb fails every later operation after an
    /// I/O error (a full disk) until the file is opened again, which the next
    /// write does, so the store recovers once space returns.
    db: Option<Database>,
}

impl RedbBackend {
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        crate::secret::create_private_dir(data_dir)?;
        let path = data_dir.join(FILE_NAME);
        let db = Some(open_file(&path).map_err(
            |e| match e.downcast_ref::<redb::DatabaseError>() {
                Some(redb::DatabaseError::DatabaseAlreadyOpen) => anyhow::anyhow!(
                    "{} is in use: another pairgate runs on the data dir {}",
                    path.display(),
                    data_dir.display()
                ),
                _ => e.context(format!("cannot open the store {}", path.display())),
            },
        )?);
        Ok(RedbBackend { path, db })
    }

    /// The open database, opened again if a failure closed it.
    fn db(&mut self) -> anyhow::Result<&Database> {
        let db = match self.db.take() {
            Some(db) => db,
            None => {
                let db = open_file(&self.path)
                    .map_err(|e| anyhow::anyhow!("reopening {}: {e:#}", self.path.display()))?;
                tracing::info!(path = %self.path.display(), "store file reopened after a failed write");
                db
            }
        };
        Ok(self.db.insert(db))
    }

    fn try_commit(&mut self, ops: &[StoreOp]) -> anyhow::Result<()> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(SESSIONS)?;
            for op in ops {
                match op {
                    StoreOp::Put(s) => {
                        let value = serde_json::to_vec(s)?;
                        table.insert(s.session_id.as_str(), value.as_slice())?;
                    }
                    StoreOp::Delete { session_id, .. } => {
                        table.remove(session_id.as_str())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

fn open_file(path: &Path) -> anyhow::Result<Database> {
    let db = Database::create(path)?;
    // Create the table on a fresh file so reads never find it missing.
    let txn = db.begin_write()?;
    txn.open_table(SESSIONS)?;
    txn.commit()?;
    Ok(db)
}

impl Backend for RedbBackend {
    fn load(&mut self) -> anyhow::Result<Vec<StoredSession>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(SESSIONS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            match serde_json::from_slice::<StoredSession>(value.value()) {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(error = %e, "skipping unreadable stored session"),
            }
        }
        Ok(out)
    }

    fn commit(&mut self, ops: &[StoreOp]) -> anyhow::Result<()> {
        let result = self.try_commit(ops);
        if result.is_err() {
            // Nothing of the failed transaction is on disk; what redb kept in
            // memory is dropped with it.
            self.db = None;
        }
        result
    }
}
