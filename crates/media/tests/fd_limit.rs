//! Out of file descriptors, parked pairs are reused rather than failing the call. (A test
//! binary of its own: it lowers the process's `RLIMIT_NOFILE`.)

use std::fs::File;
use std::time::Duration;

use confab_media::{Error, MediaConfig, MediaEngine};

fn set_soft_limit(limit: u64) {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads and writes a live rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut current), 0);
        current.rlim_cur = limit;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &current), 0);
    }
}

fn soft_limit() -> u64 {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: writes a live rlimit.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) },
        0
    );
    current.rlim_cur
}

#[test]
fn without_descriptors_for_new_sockets_parked_pairs_are_reused() {
    let engine = MediaEngine::start(MediaConfig {
        port_min: 23600,
        port_max: 23639,
        workers: 1,
        park_cooling: Duration::from_secs(3600),
        ..MediaConfig::default()
    })
    .unwrap();
    let one = engine.allocate().unwrap();
    let one_ports = [one.a_port(), one.b_port()];
    one.release().unwrap();
    let two = engine.allocate().unwrap();
    let two_ports = [two.a_port(), two.b_port()];
    two.release().unwrap();
    assert_eq!(engine.parked_pairs(), 4);

    // Every descriptor below a lowered limit in use: no new socket can be created.
    let original = soft_limit();
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    set_soft_limit(highest + 8);
    let mut filler = Vec::with_capacity(64);
    while let Ok(f) = File::open("/dev/null") {
        filler.push(f);
    }

    // Not cooled, free ports galore, but only parked pairs can be had: oldest first.
    let three = engine.allocate().unwrap();
    assert_eq!([three.a_port(), three.b_port()], one_ports);
    let four = engine.allocate().unwrap();
    assert_eq!([four.a_port(), four.b_port()], two_ports);
    assert_eq!((engine.allocated_ports(), engine.parked_pairs()), (8, 0));
    // Nothing parked left: the error says why.
    match engine.allocate() {
        Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EMFILE)),
        other => panic!("expected EMFILE, got {other:?}"),
    }
    assert_eq!(
        engine.allocated_ports(),
        8,
        "a failed allocation leaks nothing"
    );
    // A release needs no descriptor, and makes a pair available again.
    three.release().unwrap();
    let five = engine.allocate().unwrap();
    assert_eq!([five.a_port(), five.b_port()], one_ports);

    drop(filler);
    set_soft_limit(original);
    let six = engine.allocate().unwrap();
    assert!(![six.a_port(), six.b_port()]
        .iter()
        .any(|p| one_ports.contains(p) || two_ports.contains(p)));
}
