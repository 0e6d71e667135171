//! Per-dispatch GPU timing with timestamp queries written inside the compute pass, aggregated
//! by kernel. Only for finding where a step's time goes (`hangar bench --profile`): every
//! profiled submission waits for its results, so throughput measured while it runs is lower.

use std::collections::HashMap;

use hangar_engine::backend::BackendError;

use crate::device::Gpu;

/// Timestamps per submission; dispatches past this are not timed.
const MAX_QUERIES: u32 = 4096;

pub struct Profiler {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
    period_ns: f64,
    /// label -> (dispatches, total ns)
    stats: HashMap<String, (u64, f64)>,
    /// Labels of the dispatches timed in the submission being recorded.
    pending: Vec<String>,
}

/// One kernel's share of the profiled GPU time.
#[derive(Clone, Debug)]
pub struct ProfileLine {
    pub label: String,
    pub dispatches: u64,
    pub total_us: f64,
}

impl Profiler {
    /// `None` unless the device was opened with timestamp queries inside passes.
    pub fn new(gpu: &Gpu) -> Option<Profiler> {
        if !gpu.timestamps {
            return None;
        }
        let dev = &gpu.device;
        let set = dev.create_query_set(&wgpu::QuerySetDescriptor { label: Some("profile"), ty: wgpu::QueryType::Timestamp, count: MAX_QUERIES });
        let bytes = MAX_QUERIES as u64 * 8;
        let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile read"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Some(Profiler { set, resolve, read, period_ns: gpu.queue.get_timestamp_period() as f64, stats: HashMap::new(), pending: Vec::new() })
    }

    /// Marks the start of the pass.
    pub fn begin(&mut self, pass: &mut wgpu::ComputePass<'_>) {
        self.pending.clear();
        pass.write_timestamp(&self.set, 0);
    }

    /// Marks the end of the dispatch just recorded.
    pub fn after(&mut self, pass: &mut wgpu::ComputePass<'_>, label: String) {
        let i = self.pending.len() as u32 + 1;
        if i < MAX_QUERIES {
            pass.write_timestamp(&self.set, i);
            self.pending.push(label);
        }
    }

    /// Copies this submission's timestamps where `collect` can read them.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let n = self.pending.len() as u32 + 1;
        if n > 1 {
            encoder.resolve_query_set(&self.set, 0..n, &self.resolve, 0);
            encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.read, 0, n as u64 * 8);
        }
    }

    /// Waits for the submission and adds its dispatch times to the totals.
    pub fn collect(&mut self, gpu: &Gpu) -> Result<(), BackendError> {
        let n = self.pending.len() + 1;
        if n < 2 {
            return Ok(());
        }
        let slice = self.read.slice(0..n as u64 * 8);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| BackendError::Device(e.to_string()))?;
        rx.recv().map_err(|e| BackendError::Device(e.to_string()))?.map_err(|e| BackendError::Device(e.to_string()))?;
        let ticks: Vec<u64> = {
            let view = slice.get_mapped_range().map_err(|e| BackendError::Device(e.to_string()))?;
            view.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
        };
        self.read.unmap();
        for (i, label) in self.pending.drain(..).enumerate() {
            let dt = ticks[i + 1].saturating_sub(ticks[i]) as f64 * self.period_ns;
            let e = self.stats.entry(label).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += dt;
        }
        Ok(())
    }

    /// The totals so far, largest first; clears them.
    pub fn take(&mut self) -> Vec<ProfileLine> {
        let mut v: Vec<ProfileLine> =
            self.stats.drain().map(|(label, (dispatches, ns))| ProfileLine { label, dispatches, total_us: ns / 1e3 }).collect();
        v.sort_by(|a, b| b.total_us.total_cmp(&a.total_us));
        v
    }
}
