//! Clients that drop bulk downloads midway must not wedge the tunnel (found by
//! `bench/peers.sh`: after `iperf3 -P 8 -R` through `adit forward`, the node's
//! tunnel carried no new connections). Eight connections through `adit forward`
//! each read a few megabytes of an endless stream from the device and close;
//! afterwards new connections must work, and nothing is left open on the server
//! or at the device. Loopback only; every loop is bounded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adit_e2e::*;

/// A device-side server that writes an endless stream to every connection until
/// the write fails; counts the connections that ended.
fn firehose() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ended = Arc::new(AtomicUsize::new(0));
    let counter = ended.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let chunk = vec![0xa5u8; 64 * 1024];
                // Bounded: 4 GB at most, far more than any reader takes.
                for _ in 0..65_536 {
                    if conn.write_all(&chunk).is_err() {
                        break;
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (port, ended)
}

fn echo_round_trip(port: u16, tag: u8) -> std::io::Result<()> {
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let msg = [tag; 1000];
    c.write_all(&msg)?;
    let mut got = [0u8; 1000];
    c.read_exact(&mut got)?;
    assert_eq!(got, msg);
    Ok(())
}

#[test]
fn dropped_bulk_downloads_leave_the_tunnel_usable() {
    let tmp = TempDir::new("bulk-abort");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let (hose, ended) = firehose();
    let echo = echo_server();
    let _agent = start_agent(
        &home,
        &server,
        tmp.path(),
        "dev1",
        &[
            "--allow",
            &format!("127.0.0.1:{hose}"),
            "--allow",
            &format!("127.0.0.1:{echo}"),
            // The multi-threaded runtime (other tests run the default single thread).
            "--threads",
            "2",
        ],
    );
    // One forward carries the downloads, another the echo: new connections must
    // work through the same client tunnel and through a fresh one.
    let (l_hose, l_echo) = (free_port(), free_port());
    let forward = |local: u16, remote: u16| {
        let mut cmd = Command::new(bin("adit"));
        cmd.env("ADIT_HOME", &home).args([
            "forward",
            "dev1",
            &format!("{local}:127.0.0.1:{remote}"),
        ]);
        let p = Proc::spawn(cmd).unwrap();
        p.wait_line("press ctrl-c", Duration::from_secs(10))
            .unwrap();
        p
    };
    let _fwd_hose = forward(l_hose, hose);
    let _fwd_echo = forward(l_echo, echo);
    echo_round_trip(l_echo, 0).expect("echo before the downloads");

    const ROUNDS: usize = 3;
    const PARALLEL: usize = 8;
    const TAKE: usize = 8 << 20;
    for round in 1..=ROUNDS {
        // Eight readers take 8 MB each, then close with the device still sending.
        let readers: Vec<_> = (0..PARALLEL)
            .map(|_| {
                std::thread::spawn(move || -> std::io::Result<usize> {
                    let mut c = TcpStream::connect(("127.0.0.1", l_hose))?;
                    c.set_read_timeout(Some(Duration::from_secs(20)))?;
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut got = 0;
                    while got < TAKE {
                        match c.read(&mut buf)? {
                            0 => break,
                            n => got += n,
                        }
                    }
                    Ok(got)
                })
            })
            .collect();
        for r in readers {
            let got = r.join().unwrap().expect("bulk read");
            assert!(
                got >= TAKE,
                "round {round}: a download ended early at {got}"
            );
        }
        // New connections through the same tunnels still work at once.
        echo_round_trip(l_echo, round as u8)
            .unwrap_or_else(|e| panic!("round {round}: echo after dropped downloads: {e}"));
        let mut c = TcpStream::connect(("127.0.0.1", l_hose)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut first = vec![0u8; 1 << 20];
        c.read_exact(&mut first)
            .unwrap_or_else(|e| panic!("round {round}: a new download after dropped ones: {e}"));
        assert!(first.iter().all(|b| *b == 0xa5));
    }
    // Every download ended at the device too, and the server holds no stream.
    let all = ROUNDS * (PARALLEL + 1);
    let settled = wait_for(Duration::from_secs(20), || {
        (ended.load(Ordering::SeqCst) == all && metric(&server, "adit_streams_active") == Some(0))
            .then_some(())
    });
    assert!(
        settled.is_some(),
        "{} of {all} device-side connections ended; server streams active: {:?}",
        ended.load(Ordering::SeqCst),
        metric(&server, "adit_streams_active")
    );
}
