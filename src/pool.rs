//! Size-classed buffer pool: a steady loop of the same shapes allocates nothing after its first pass.
//!
//! Sizes are rounded up to a class (powers of two split into 4 steps, so at most 25 % waste) and a
//! dropped buffer goes back to the free list of its (usage, class). Reuse is safe without fences:
//! wgpu orders every submission on the queue, so a later dispatch that writes a recycled buffer runs
//! after every earlier one that read it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// What a pooled buffer is for; each kind has its own free lists and wgpu usage flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// Tensors: read and written by kernels, copied to and from.
    Storage,
    /// Kernel parameters of one recording.
    Uniform,
    /// Host-visible buffers for read-back.
    Staging,
}

impl BufferKind {
    fn usage(self) -> wgpu::BufferUsages {
        use wgpu::BufferUsages as U;
        match self {
            BufferKind::Storage => U::STORAGE | U::COPY_SRC | U::COPY_DST,
            BufferKind::Uniform => U::UNIFORM | U::COPY_DST,
            BufferKind::Staging => U::MAP_READ | U::COPY_DST,
        }
    }
}

/// Counters that tests and benchmarks read to prove the pool is steady.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers created by the device since the pool was made.
    pub allocations: u64,
    /// Requests served from a free list.
    pub reuses: u64,
    /// Bytes of buffers currently handed out.
    pub bytes_in_use: u64,
    /// Bytes of buffers waiting in free lists.
    pub bytes_cached: u64,
}

#[derive(Default)]
struct Inner {
    free: HashMap<(BufferKind, u64), Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

/// The pool. Cheap to clone; all clones share the free lists.
#[derive(Clone)]
pub struct BufferPool {
    device: wgpu::Device,
    inner: Arc<Mutex<Inner>>,
}

/// A buffer on loan from the pool; it returns itself when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    kind: BufferKind,
    class: u64,
    pool: Weak<Mutex<Inner>>,
}

impl PooledBuffer {
    /// The wgpu buffer (its size is the size class, not the requested size).
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
    pub fn kind(&self) -> BufferKind {
        self.kind
    }
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PooledBuffer({:?}, {} bytes)", self.kind, self.class)
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let (Some(buf), Some(pool)) = (self.buffer.take(), self.pool.upgrade()) else {
            return;
        };
        let mut inner = pool.lock().unwrap_or_else(|p| p.into_inner());
        inner.stats.bytes_in_use -= self.class;
        inner.stats.bytes_cached += self.class;
        inner
            .free
            .entry((self.kind, self.class))
            .or_default()
            .push(buf);
    }
}

/// The size class a request of `bytes` is rounded up to: 256 B minimum, then four steps per power of two.
pub fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let p = b.next_power_of_two();
    if p == b {
        return p;
    }
    let step = p / 8; // four steps between p/2 and p
    b.div_ceil(step) * step
}

impl BufferPool {
    pub fn new(device: wgpu::Device) -> Self {
        BufferPool {
            device,
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    /// A buffer of at least `bytes` bytes. The caller checks limits first (see `Context::alloc`).
    pub fn get(&self, kind: BufferKind, bytes: u64) -> PooledBuffer {
        let class = size_class(bytes);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let buffer = match inner.free.get_mut(&(kind, class)).and_then(Vec::pop) {
            Some(b) => {
                inner.stats.reuses += 1;
                inner.stats.bytes_cached -= class;
                b
            }
            None => {
                inner.stats.allocations += 1;
                drop(inner);
                let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("chunkwise pooled buffer"),
                    size: class,
                    usage: kind.usage(),
                    mapped_at_creation: false,
                });
                inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                b
            }
        };
        inner.stats.bytes_in_use += class;
        PooledBuffer {
            buffer: Some(buffer),
            kind,
            class,
            pool: Arc::downgrade(&self.inner),
        }
    }

    pub fn stats(&self) -> PoolStats {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).stats
    }

    /// Releases every cached buffer back to the driver (for example after a large one-off job).
    pub fn trim(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.free.clear();
        inner.stats.bytes_cached = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_round_up_by_at_most_a_quarter() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 320);
        assert_eq!(size_class(1000), 1024);
        assert_eq!(size_class(1025), 1280);
        for b in [300u64, 5000, 123_457, 10_000_000] {
            let c = size_class(b);
            assert!(c >= b && (c as f64) <= b as f64 * 1.25, "{b} -> {c}");
            assert_eq!(c % 4, 0);
        }
    }
}
