//! A TCP proxy on 127.0.0.1 that tests switch on and off, to make a service (the broker)
//! unreachable and reachable again without touching the service itself.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Forwards connections from its own port to `target` while it is on.
pub struct Proxy {
    port: u16,
    target: SocketAddr,
    running: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: thread::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `target` on a free port, switched off (connections are refused).
    pub fn new(target: SocketAddr) -> Proxy {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Proxy {
            port,
            target,
            running: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts accepting and forwarding connections.
    pub fn start(&mut self) {
        assert!(self.running.is_none(), "the proxy is already on");
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("bind the proxy port again");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let target = self.target;
        let acceptor = {
            let (stop, connections) = (stop.clone(), connections.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let Ok(server) = TcpStream::connect(target) else {
                                continue;
                            };
                            let _ = client.set_nonblocking(false);
                            let mut open = connections.lock().expect("connections lock");
                            open.push(client.try_clone().expect("clone client"));
                            open.push(server.try_clone().expect("clone server"));
                            pipe(client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                            pipe(server, client);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        self.running = Some(Running {
            stop,
            connections,
            acceptor,
        });
    }

    /// Stops accepting and cuts every open connection.
    pub fn stop(&mut self) {
        let Some(running) = self.running.take() else { return };
        running.stop.store(true, Ordering::SeqCst);
        let _ = running.acceptor.join();
        for stream in running.connections.lock().expect("connections lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies bytes from `from` to `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
