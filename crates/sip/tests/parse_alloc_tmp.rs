use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
struct Counting;
static N: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 { N.fetch_add(1, Ordering::Relaxed); unsafe { System.alloc(l) } }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) { unsafe { System.dealloc(p, l) } }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, s: usize) -> *mut u8 { N.fetch_add(1, Ordering::Relaxed); unsafe { System.realloc(p, l, s) } }
}
#[global_allocator]
static A: Counting = Counting;
include!("parse_register.rs");
#[test]
fn count() {
    let before = N.load(Ordering::Relaxed);
    let m = Message::parse(REGISTER, true).unwrap();
    let mid = N.load(Ordering::Relaxed);
    let _ = m.to_bytes();
    let after = N.load(Ordering::Relaxed);
    eprintln!("parse allocs {} serialise allocs {}", mid - before, after - mid);
}
