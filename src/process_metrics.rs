//! The process's own series, read from `/proc` at each scrape: resident
//! memory, open files against their limit, CPU time, start time (the names
//! every Prometheus process collector uses, so stock dashboards and alerts
//! work), and `pairgate_build_info`. Running out of file descriptors is how a
//! gateway dies, so `process_open_fds / process_max_fds` is the one to alert on.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let info = ConstGauge::new(1);
        let labels = [("version", env!("CARGO_PKG_VERSION"))];
        let mut family = encoder.encode_descriptor(
            "pairgate_build_info",
            "The running build: always 1, the version in a label",
            None,
            info.metric_type(),
        )?;
        info.encode(family.encode_family(&labels)?)?;
        #[cfg(target_os = "linux")]
        linux::encode(&mut encoder)?;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;

    fn gauge(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: f64,
    ) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(value);
        g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
    }

    pub fn encode(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A series that cannot be read this time is left out, never faked.
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let page = procfs::page_size() as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(
                encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stat.rss as f64 * page,
            )?;
            gauge(
                encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stat.vsize as f64,
            )?;
            if let Ok(boot) = procfs::boot_time_secs() {
                gauge(
                    encoder,
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch, in seconds",
                    boot as f64 + stat.starttime as f64 / ticks,
                )?;
            }
        }
        if let Ok(fds) = me.fd_count() {
            gauge(
                encoder,
                "process_open_fds",
                "Open file descriptors (every socket is one)",
                fds as f64,
            )?;
        }
        if let Ok(limits) = me.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            gauge(
                encoder,
                "process_max_fds",
                "The open-files limit (soft)",
                max as f64,
            )?;
        }
        Ok(())
    }
}
