//! The real registry: Debian's `docker-registry` (distribution 2.8) started on 127.0.0.1 with
//! a config written here — plain HTTP, htpasswd Basic auth, or TLS with a CA made by openssl.
//! Without the program the tests are skipped locally and fail under `CI` (CI must run them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub enum Auth {
    None,
    /// htpasswd (bcrypt) with this user and password.
    Htpasswd(&'static str, &'static str),
    /// Token auth: the realm URL, and the PEM of the certificate tokens are signed with.
    Token {
        realm: String,
        cert: PathBuf,
    },
}

pub struct Registry {
    pub addr: String,
    /// With TLS: the directory holding `ca.crt` (for `--cert-dir`).
    pub certs: Option<PathBuf>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the registry tests can run here; panics under CI when not.
pub fn available() -> bool {
    let ok = have("docker-registry") && have("skopeo") && have("htpasswd") && have("openssl");
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but docker-registry, skopeo, htpasswd (apache2-utils) or openssl is missing: .ci/run installs them"
        );
        eprintln!("SKIPPED: needs docker-registry, skopeo, htpasswd and openssl");
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A CA, and a server certificate it signed for 127.0.0.1, in `dir`: `ca.crt`, `server.crt`,
/// `server.key`.
pub fn make_certs(dir: &Path) {
    let d = |f: &str| dir.join(f).to_str().unwrap().to_string();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=strata test CA",
        "-keyout",
        &d("ca.key"),
        "-out",
        &d("ca.crt"),
    ]));
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &d("server.key"),
        "-out",
        &d("server.csr"),
    ]));
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &d("server.csr"),
        "-CA",
        &d("ca.crt"),
        "-CAkey",
        &d("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &d("ext.cnf"),
        "-out",
        &d("server.crt"),
    ]));
}

impl Registry {
    pub fn start(auth: Auth, tls: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let mut certs = None;
        if tls {
            let c = dir.path().join("certs");
            std::fs::create_dir(&c).unwrap();
            make_certs(&c);
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                c.join("server.crt").display(),
                c.join("server.key").display()
            ));
            // The client side reads only *.crt from --cert-dir.
            let client = dir.path().join("client-certs");
            std::fs::create_dir(&client).unwrap();
            std::fs::copy(c.join("ca.crt"), client.join("ca.crt")).unwrap();
            certs = Some(client);
        }
        match &auth {
            Auth::None => {}
            Auth::Htpasswd(user, pass) => {
                let line = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
                let f = dir.path().join("htpasswd");
                std::fs::write(&f, line.trim()).unwrap();
                cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                    f.display()
                ));
            }
            Auth::Token { realm, cert } => {
                cfg.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: strata-test\n    issuer: strata-test-issuer\n    rootcertbundle: {}\n",
                    cert.display()
                ));
            }
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {addr}: {}",
                std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            addr,
            certs,
            child,
            _dir: dir,
        }
    }

    /// `skopeo copy SRC docker://ADDR/DST` (plain or TLS without verification), as an OCI
    /// manifest or Docker's schema 2, with `--dest-creds` when given.
    pub fn push(&self, src: &str, dst: &str, oci: bool, creds: Option<&str>) {
        let dest = format!("docker://{}/{dst}", self.addr);
        let mut c = Command::new("skopeo");
        c.args(["copy", "--insecure-policy", "--dest-tls-verify=false", "-q"]);
        // skopeo keeps an OCI source's manifest type unless told: say which, always.
        c.args(["--format", if oci { "oci" } else { "v2s2" }]);
        if let Some(cr) = creds {
            c.args(["--dest-creds", cr]);
        }
        run(c.args([src, &dest]));
    }

    /// `skopeo copy docker://ADDR/SRC DST`.
    pub fn pull(&self, src: &str, dst: &str, creds: Option<&str>) {
        let from = format!("docker://{}/{src}", self.addr);
        let mut c = Command::new("skopeo");
        c.args(["copy", "--insecure-policy", "--src-tls-verify=false", "-q"]);
        if let Some(cr) = creds {
            c.args(["--src-creds", cr]);
        }
        run(c.args([&from, dst]));
    }
}
