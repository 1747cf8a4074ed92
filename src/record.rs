//! A recording: dispatches collected on the host, then encoded into one command buffer and one
//! submit. All kernel parameters of a recording share one uniform buffer, written once.
//!
//! Checks that would otherwise be wgpu validation panics (binding counts, aliasing of a written
//! buffer, workgroup counts and binding sizes over the adapter's limits) happen here, when a
//! dispatch is recorded, and come back as typed errors.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{BindingKind, Kernel};
use crate::pool::{BufferKind, PooledBuffer};
use crate::tensor::Tensor;

struct Dispatch {
    kernel: Arc<Kernel>,
    params: Option<(u64, u64)>, // offset, size in the shared uniform buffer
    buffers: Vec<(Arc<PooledBuffer>, u64)>,
    groups: [u32; 3],
}

enum Cmd {
    Dispatch(Dispatch),
    Zero {
        dst: Arc<PooledBuffer>,
        bytes: u64,
    },
    Copy {
        src: Arc<PooledBuffer>,
        src_off: u64,
        dst: Arc<PooledBuffer>,
        dst_off: u64,
        bytes: u64,
    },
}

/// The kernels one piece of work dispatched (see [`trace_kernels`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelTrace {
    /// Kernel names (`file stem` or `stem:entry`), sorted.
    pub kernels: BTreeSet<String>,
    /// Whether any of them uses subgroup operations.
    pub subgroups: bool,
}

impl KernelTrace {
    /// The kernel names joined by `+`, e.g. `gemm_direct_sg+transpose`.
    pub fn joined(&self) -> String {
        self.kernels.iter().cloned().collect::<Vec<_>>().join("+")
    }
}

thread_local! {
    static TRACE: RefCell<Option<KernelTrace>> = const { RefCell::new(None) };
}

/// Runs `f` and returns, with its result, every kernel dispatched on this thread meanwhile (on
/// any context): how `chunkwise check` names the variant a case ran.
pub fn trace_kernels<T>(f: impl FnOnce() -> T) -> (T, KernelTrace) {
    let outer = TRACE.with(|t| t.borrow_mut().replace(KernelTrace::default()));
    let out = f();
    let trace = TRACE.with(|t| std::mem::replace(&mut *t.borrow_mut(), outer));
    (out, trace.unwrap_or_default())
}

/// What a recording holds, counted from its commands: for benchmark rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordingStats {
    /// Compute dispatches (copies and clears not counted).
    pub dispatches: usize,
    /// Workgroups of the smallest dispatch (0 when there is none).
    pub min_workgroups: u64,
}

/// Collects dispatches; nothing reaches the GPU until [`Recording::submit`].
pub struct Recording {
    ctx: Context,
    cmds: Vec<Cmd>,
    params: Vec<u8>,
    /// What earlier flushes of this recording submitted.
    flushed: RecordingStats,
}

impl Recording {
    pub(crate) fn new(ctx: Context) -> Self {
        Recording {
            ctx,
            cmds: Vec::new(),
            params: Vec::new(),
            flushed: RecordingStats::default(),
        }
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Dispatches and the smallest dispatch recorded so far, flushed ones included.
    pub fn stats(&self) -> RecordingStats {
        let groups = self.cmds.iter().filter_map(|c| match c {
            Cmd::Dispatch(d) => Some(d.groups.iter().map(|&g| g as u64).product::<u64>()),
            _ => None,
        });
        let start = (
            self.flushed.dispatches,
            match self.flushed.dispatches {
                0 => u64::MAX,
                _ => self.flushed.min_workgroups,
            },
        );
        let (dispatches, min) = groups.fold(start, |(n, m), g| (n + 1, m.min(g)));
        RecordingStats {
            dispatches,
            min_workgroups: if dispatches == 0 { 0 } else { min },
        }
    }

    /// Number of dispatches and copies recorded so far.
    pub fn len(&self) -> usize {
        self.cmds.len()
    }
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Records one dispatch. `params` goes to the kernel's uniform binding; `tensors` go to its
    /// storage bindings in binding order.
    pub fn dispatch(
        &mut self,
        kernel: &Arc<Kernel>,
        params: &[u8],
        tensors: &[&Tensor],
        groups: [u32; 3],
    ) -> Result<()> {
        let name = kernel.name();
        let storage: Vec<_> = kernel
            .info
            .bindings
            .iter()
            .filter(|b| b.1 != BindingKind::Uniform)
            .collect();
        let has_uniform = kernel
            .info
            .bindings
            .iter()
            .any(|b| b.1 == BindingKind::Uniform);
        if storage.len() != tensors.len() {
            return Err(Error::Binding {
                kernel: name,
                msg: format!(
                    "the shader declares {} storage bindings but {} tensors were given",
                    storage.len(),
                    tensors.len()
                ),
            });
        }
        // A buffer written by a dispatch may not be bound a second time in it (wgpu usage rules).
        for (i, (b, t)) in storage.iter().zip(tensors).enumerate() {
            if b.1 == BindingKind::StorageReadWrite {
                if let Some(j) = tensors
                    .iter()
                    .enumerate()
                    .position(|(j, u)| j != i && u.same_buffer(t))
                {
                    return Err(Error::Binding {
                        kernel: name,
                        msg: format!("tensor {i} is written and also bound as tensor {j}; in-place use needs a separate output"),
                    });
                }
            }
        }
        let limits = self.ctx.limits();
        let max_groups = limits.max_compute_workgroups_per_dimension;
        if let Some(&g) = groups.iter().find(|&&g| g > max_groups) {
            return Err(Error::LimitExceeded {
                what: format!("kernel {name} dispatch of {groups:?} workgroups"),
                requested: g as u64,
                limit_name: "max_compute_workgroups_per_dimension",
                limit: max_groups as u64,
            });
        }
        let max_binding = self.ctx.binding_limit();
        let mut buffers = Vec::with_capacity(tensors.len());
        for t in tensors {
            let bytes = t.padded_bytes();
            if bytes > max_binding {
                return Err(Error::LimitExceeded {
                    what: format!("kernel {name} binding a tensor of shape {:?}", t.shape()),
                    requested: bytes,
                    limit_name: "max_storage_buffer_binding_size",
                    limit: max_binding,
                });
            }
            buffers.push((t.buf.clone(), bytes));
        }
        let params = if has_uniform {
            let align = limits.min_uniform_buffer_offset_alignment.max(16) as usize;
            let offset = self.params.len().div_ceil(align) * align;
            let size = params.len().div_ceil(16).max(1) * 16;
            self.params.resize(offset + size, 0);
            self.params[offset..offset + params.len()].copy_from_slice(params);
            Some((offset as u64, size as u64))
        } else {
            None
        };
        if groups.contains(&0) {
            return Ok(()); // nothing to do (an empty tensor)
        }
        TRACE.with(|t| {
            if let Some(trace) = t.borrow_mut().as_mut() {
                trace.kernels.insert(kernel.short_name());
                trace.subgroups |= kernel.info.uses_subgroups;
            }
        });
        self.cmds.push(Cmd::Dispatch(Dispatch {
            kernel: kernel.clone(),
            params,
            buffers,
            groups,
        }));
        Ok(())
    }

    /// Records a whole-tensor copy (same byte size).
    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.bytes() != dst.bytes() {
            return Err(Error::shape(
                "copy",
                format!(
                    "source {:?} {:?} and destination {:?} {:?} differ in size",
                    src.shape(),
                    src.dtype(),
                    dst.shape(),
                    dst.dtype()
                ),
            ));
        }
        if src.bytes() > 0 {
            self.cmds.push(Cmd::Copy {
                src: src.buf.clone(),
                src_off: 0,
                dst: dst.buf.clone(),
                dst_off: 0,
                bytes: src.padded_bytes(),
            });
        }
        Ok(())
    }

    /// Records filling a tensor with zeros.
    pub fn zero(&mut self, t: &Tensor) {
        if t.bytes() > 0 {
            self.cmds.push(Cmd::Zero {
                dst: t.buf.clone(),
                bytes: t.padded_bytes(),
            });
        }
    }

    /// Records a copy of `len` elements from `src` (starting at element `src_at`) into `dst`
    /// (starting at `dst_at`). Byte offsets and sizes must be multiples of 4 (even counts for f16).
    pub fn copy_region(
        &mut self,
        src: &Tensor,
        src_at: u64,
        dst: &Tensor,
        dst_at: u64,
        len: u64,
    ) -> Result<()> {
        if src.dtype() != dst.dtype() {
            return Err(Error::DType {
                op: "copy_region",
                expected: src.dtype(),
                got: dst.dtype(),
            });
        }
        let es = src.dtype().size() as u64;
        if src_at + len > src.numel() as u64 || dst_at + len > dst.numel() as u64 {
            return Err(Error::shape(
                "copy_region",
                format!(
                    "{len} elements at {src_at} -> {dst_at} overrun {:?} or {:?}",
                    src.shape(),
                    dst.shape()
                ),
            ));
        }
        let (so, dof, mut b) = (src_at * es, dst_at * es, len * es);
        // A copy that ends both tensors' data may round its size up into their padding (every
        // buffer is a whole number of 4-byte words): an odd count of f16 values at the end.
        if so + b == src.bytes() && dof + b == dst.bytes() {
            b = b.div_ceil(4) * 4;
        }
        if so % 4 != 0 || dof % 4 != 0 || b % 4 != 0 {
            return Err(Error::invalid(
                "copy_region",
                "offsets and sizes must be multiples of 4 bytes",
            ));
        }
        if b > 0 {
            self.cmds.push(Cmd::Copy {
                src: src.buf.clone(),
                src_off: so,
                dst: dst.buf.clone(),
                dst_off: dof,
                bytes: b,
            });
        }
        Ok(())
    }

    /// Submits what is recorded so far and keeps recording into the same `Recording`. Tensors
    /// that only the submitted commands still used go back to the pool and serve later
    /// allocations (the queue runs submissions in order): a long pipeline of large steps, such as
    /// a model's prefill, then holds one step's intermediates at a time instead of all of them.
    pub fn flush(&mut self) -> Result<()> {
        if self.cmds.is_empty() {
            return Ok(());
        }
        self.flushed = self.stats();
        Recording {
            ctx: self.ctx.clone(),
            cmds: std::mem::take(&mut self.cmds),
            params: std::mem::take(&mut self.params),
            flushed: RecordingStats::default(),
        }
        .submit()
    }

    /// Encodes everything into one command buffer and submits it. Returns without waiting; use
    /// [`Context::sync`] or a download to wait.
    pub fn submit(self) -> Result<()> {
        self.submit_inner(None)
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Submits and waits, timing the recording with GPU timestamps where the adapter has them
    /// (else wall clock after a full sync). Returns seconds.
    pub fn submit_timed(self) -> Result<f64> {
        let ctx = self.ctx.clone();
        if !ctx.supports_timestamps() {
            let t0 = web_time::Instant::now();
            self.submit()?;
            ctx.sync()?;
            return Ok(t0.elapsed().as_secs_f64());
        }
        let device = ctx.device();
        let qs = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("timing"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timing resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timing read"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.submit_inner(Some((&qs, &resolve, &read)))?;
        let (tx, rx) = std::sync::mpsc::channel();
        read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        ctx.sync()?;
        rx.recv()
            .map_err(|_| Error::Readback("map callback never ran".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let ticks: Vec<u64> = {
            let view = read
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Readback(e.to_string()))?;
            bytemuck::pod_collect_to_vec(&view[..])
        };
        let ns =
            ticks[1].saturating_sub(ticks[0]) as f64 * ctx.queue().get_timestamp_period() as f64;
        Ok(ns * 1e-9)
    }

    fn submit_inner(
        self,
        timing: Option<(&wgpu::QuerySet, &wgpu::Buffer, &wgpu::Buffer)>,
    ) -> Result<()> {
        let ctx = &self.ctx;
        ctx.check_alive()?;
        let device = ctx.device();
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let uniform: Option<PooledBuffer> = (!self.params.is_empty()).then(|| {
            let u = ctx
                .inner
                .pool
                .get(BufferKind::Uniform, self.params.len() as u64);
            ctx.queue().write_buffer(u.buffer(), 0, &self.params);
            u
        });
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("chunkwise recording"),
        });
        let n = self.cmds.len();
        // Timestamps ride on compute passes: a recording that starts or ends with a copy or a
        // clear gets an empty pass there to carry them.
        let stamp = |enc: &mut wgpu::CommandEncoder, qs: &wgpu::QuerySet, index: u32| {
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("chunkwise timestamp"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: qs,
                    beginning_of_pass_write_index: Some(index),
                    end_of_pass_write_index: None,
                }),
            });
        };
        let starts_with_dispatch = matches!(self.cmds.first(), Some(Cmd::Dispatch(_)));
        let ends_with_dispatch = matches!(self.cmds.last(), Some(Cmd::Dispatch(_)));
        if let (Some((qs, _, _)), false) = (timing, starts_with_dispatch) {
            stamp(&mut enc, qs, 0);
        }
        let mut i = 0;
        while i < n {
            match &self.cmds[i] {
                Cmd::Copy {
                    src,
                    src_off,
                    dst,
                    dst_off,
                    bytes,
                } => {
                    enc.copy_buffer_to_buffer(
                        src.buffer(),
                        *src_off,
                        dst.buffer(),
                        *dst_off,
                        *bytes,
                    );
                    i += 1;
                }
                Cmd::Zero { dst, bytes } => {
                    enc.clear_buffer(dst.buffer(), 0, Some(*bytes));
                    i += 1;
                }
                Cmd::Dispatch(_) => {
                    // Consecutive dispatches share one compute pass; wgpu inserts the barriers.
                    let end = (i..n)
                        .find(|&j| !matches!(self.cmds[j], Cmd::Dispatch(_)))
                        .unwrap_or(n);
                    let bind_groups: Vec<wgpu::BindGroup> = self.cmds[i..end]
                        .iter()
                        .map(|c| match c {
                            Cmd::Dispatch(d) => bind_group(device, d, uniform.as_ref()),
                            _ => unreachable!("copies and clears end a pass"),
                        })
                        .collect();
                    let ts = timing.map(|(qs, _, _)| wgpu::ComputePassTimestampWrites {
                        query_set: qs,
                        beginning_of_pass_write_index: (i == 0).then_some(0),
                        end_of_pass_write_index: (end == n).then_some(1),
                    });
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("chunkwise"),
                        timestamp_writes: ts.filter(|t| {
                            t.beginning_of_pass_write_index.is_some()
                                || t.end_of_pass_write_index.is_some()
                        }),
                    });
                    for (c, bg) in self.cmds[i..end].iter().zip(&bind_groups) {
                        if let Cmd::Dispatch(d) = c {
                            pass.set_pipeline(&d.kernel.pipeline);
                            pass.set_bind_group(0, bg, &[]);
                            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                        }
                    }
                    drop(pass);
                    i = end;
                }
            }
        }
        if let Some((qs, resolve, read)) = timing {
            if !ends_with_dispatch {
                stamp(&mut enc, qs, 1);
            }
            enc.resolve_query_set(qs, 0..2, resolve, 0);
            enc.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
        }
        ctx.queue().submit([enc.finish()]);
        // Inner scope first. Out of memory wins: the validation errors that follow from it say less.
        let late = &ctx.inner.registry.late;
        let val = crate::context::settle(val, late, || "submitting a recording".into());
        let oom = crate::context::settle(oom, late, || "submitting a recording".into());
        oom.and(val)?;
        ctx.check_alive()
    }
}

fn bind_group(
    device: &wgpu::Device,
    d: &Dispatch,
    uniform: Option<&PooledBuffer>,
) -> wgpu::BindGroup {
    let mut storage = d.buffers.iter();
    let entries: Vec<wgpu::BindGroupEntry> = d
        .kernel
        .info
        .bindings
        .iter()
        .map(|&(binding, kind)| {
            let resource = match kind {
                BindingKind::Uniform => {
                    let (offset, size) = d.params.expect("uniform params recorded");
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: uniform.expect("uniform buffer present").buffer(),
                        offset,
                        size: wgpu::BufferSize::new(size),
                    })
                }
                _ => {
                    let (buf, bytes) = storage
                        .next()
                        .expect("storage count checked at record time");
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: buf.buffer(),
                        offset: 0,
                        size: wgpu::BufferSize::new(*bytes),
                    })
                }
            };
            wgpu::BindGroupEntry { binding, resource }
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &d.kernel.layout,
        entries: &entries,
    })
}
