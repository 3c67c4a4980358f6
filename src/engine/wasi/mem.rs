//! Bounds-checked access to the caller's linear memory (memory 0 of the calling frame).
//!
//! The memory is addressed through a raw base pointer and its current byte length, taken once per
//! host call: linear memory cannot grow or move while a host function runs (the host functions here
//! never call back into wasm). Every access is checked against that length; a failed check is
//! reported as `EFAULT`, never as a panic.

use wasmedge_sys::CallingFrame;

use super::abi::{errno, Errno};

pub struct Mem {
    base: *mut u8,
    len: usize,
}

const PAGE: usize = 65536;

impl Mem {
    /// The frame's memory 0, or an empty memory (every non-empty access faults) when there is none.
    pub fn of(frame: &mut CallingFrame) -> Mem {
        if let Some(mut memory) = frame.memory_mut(0) {
            let len = memory.size() as usize * PAGE;
            if len > 0 {
                // SAFETY: asks WasmEdge for a bounds-checked pointer to byte 0; memory is contiguous.
                if let Ok(base) = unsafe { memory.data_pointer_mut(0, 1) } {
                    return Mem { base, len };
                }
            }
        }
        Mem {
            base: std::ptr::null_mut(),
            len: 0,
        }
    }

    #[cfg(test)]
    pub fn from_slice(buf: &mut [u8]) -> Mem {
        Mem {
            base: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// Checks that `[off, off+len)` lies inside the memory; returns the start as usize.
    #[inline]
    pub fn check(&self, off: u32, len: u32) -> Result<usize, Errno> {
        let end = off as u64 + len as u64;
        if end > self.len as u64 {
            return Err(errno::FAULT);
        }
        Ok(off as usize)
    }

    /// Raw pointer to a checked range (for passing guest buffers straight to syscalls).
    #[inline]
    pub fn ptr(&self, off: u32, len: u32) -> Result<*mut u8, Errno> {
        let start = self.check(off, len)?;
        if len == 0 {
            return Ok(std::ptr::NonNull::<u8>::dangling().as_ptr());
        }
        // SAFETY: start + len <= self.len, inside the mapping.
        Ok(unsafe { self.base.add(start) })
    }

    pub fn slice(&self, off: u32, len: u32) -> Result<&[u8], Errno> {
        let p = self.ptr(off, len)?;
        // SAFETY: checked range; no &mut to guest memory exists while this borrow of self lives.
        Ok(unsafe { std::slice::from_raw_parts(p, len as usize) })
    }

    pub fn slice_mut(&mut self, off: u32, len: u32) -> Result<&mut [u8], Errno> {
        let p = self.ptr(off, len)?;
        // SAFETY: checked range; unique borrow of self.
        Ok(unsafe { std::slice::from_raw_parts_mut(p, len as usize) })
    }

    pub fn write_bytes(&mut self, off: u32, data: &[u8]) -> Result<(), Errno> {
        let len = u32::try_from(data.len()).map_err(|_| errno::FAULT)?;
        self.slice_mut(off, len)?.copy_from_slice(data);
        Ok(())
    }

    pub fn read_u8(&self, off: u32) -> Result<u8, Errno> {
        Ok(self.slice(off, 1)?[0])
    }
    pub fn read_u16(&self, off: u32) -> Result<u16, Errno> {
        Ok(u16::from_le_bytes(self.slice(off, 2)?.try_into().unwrap()))
    }
    pub fn read_u32(&self, off: u32) -> Result<u32, Errno> {
        Ok(u32::from_le_bytes(self.slice(off, 4)?.try_into().unwrap()))
    }
    pub fn read_u64(&self, off: u32) -> Result<u64, Errno> {
        Ok(u64::from_le_bytes(self.slice(off, 8)?.try_into().unwrap()))
    }
    pub fn write_u8(&mut self, off: u32, v: u8) -> Result<(), Errno> {
        self.write_bytes(off, &[v])
    }
    pub fn write_u32(&mut self, off: u32, v: u32) -> Result<(), Errno> {
        self.write_bytes(off, &v.to_le_bytes())
    }
    pub fn write_u64(&mut self, off: u32, v: u64) -> Result<(), Errno> {
        self.write_bytes(off, &v.to_le_bytes())
    }

    /// A guest string (path); WASI strings are UTF-8 without a terminator. Embedded NULs are refused.
    pub fn read_str(&self, off: u32, len: u32) -> Result<&str, Errno> {
        let bytes = self.slice(off, len)?;
        if bytes.contains(&0) {
            return Err(errno::INVAL);
        }
        std::str::from_utf8(bytes).map_err(|_| errno::ILSEQ)
    }

    /// Reads an iovec array and returns the checked `libc::iovec`s pointing into guest memory.
    /// At most 1024 entries are used and the total is kept below `i32::MAX` (short I/O is allowed).
    pub fn iovecs(&self, iovs: u32, count: u32) -> Result<Vec<libc::iovec>, Errno> {
        let bytes = count
            .checked_mul(super::abi::IOVEC_SIZE)
            .ok_or(errno::FAULT)?;
        self.check(iovs, bytes)?;
        let n = count.min(1024);
        let mut out = Vec::with_capacity(n as usize);
        let mut total: u64 = 0;
        for i in 0..n {
            let at = iovs + i * super::abi::IOVEC_SIZE;
            let buf = self.read_u32(at)?;
            let len = self.read_u32(at + 4)?;
            let p = self.ptr(buf, len)?;
            if total + len as u64 > i32::MAX as u64 {
                break;
            }
            total += len as u64;
            if len > 0 {
                out.push(libc::iovec {
                    iov_base: p as *mut libc::c_void,
                    iov_len: len as usize,
                });
            }
        }
        Ok(out)
    }
}
