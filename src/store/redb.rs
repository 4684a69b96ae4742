//! The default backend: one redb file in the data dir, one table of sessions
//! keyed by session id, values as JSON.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Backend, StoreOp, StoredSession};

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// File name inside the data dir.
pub const FILE_NAME: &str = "pairgate.redb";

pub struct RedbBackend {
    db: Database,
}

impl RedbBackend {
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        crate::secret::create_private_dir(data_dir)?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
                "{} is in use: another pairgate runs on the data dir {}",
                path.display(),
                data_dir.display()
            ),
            e => anyhow::anyhow!("cannot open the store {}: {e}", path.display()),
        })?;
        // Create the table on a fresh file so reads never find it missing.
        let txn = db.begin_write()?;
        txn.open_table(SESSIONS)?;
        txn.commit()?;
        Ok(RedbBackend { db })
    }
}

impl Backend for RedbBackend {
    fn load(&mut self) -> anyhow::Result<Vec<StoredSession>> {
        let txn = self.db.begin_read()?;
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
        let mut txn = self.db.begin_write()?;
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
