//! TLS for a registry: the system roots plus a `certs.d` directory, as containers and Docker
//! read it (`containers-certs.d(5)`): `*.crt` are extra CA roots, a `NAME.cert` with its
//! `NAME.key` is a client certificate. Without `--cert-dir`, `/etc/containers/certs.d/HOST` and
//! `/etc/docker/certs.d/HOST` are read when present. `--tls-verify=false` turns verification off.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// The TLS configuration for `host` (`host[:port]`).
pub fn config(host: &str, cert_dir: Option<&Path>, verify: bool) -> Result<TlsConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = TlsConfig::builder().unversioned_rustls_crypto_provider(provider);
    let dirs: Vec<PathBuf> = match cert_dir {
        Some(d) => vec![d.to_path_buf()],
        None => ["/etc/containers/certs.d", "/etc/docker/certs.d"]
            .iter()
            .map(|root| Path::new(root).join(host))
            .filter(|d| d.is_dir())
            .collect(),
    };
    let mut roots: Vec<Certificate<'static>> = Vec::new();
    let mut client = None;
    for dir in &dirs {
        let (r, c) = read_dir(dir)?;
        roots.extend(r);
        client = client.or(c);
    }
    if !verify {
        return Ok(builder
            .disable_verification(true)
            .client_cert(client)
            .build());
    }
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        roots.push(Certificate::from_der(c.as_ref()).to_owned());
    }
    if roots.is_empty() {
        return Err(Error::Usage(format!(
            "{host}: no CA certificates: the system has none (install ca-certificates) and no --cert-dir gave any"
        )));
    }
    Ok(builder
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .client_cert(client)
        .build())
}

fn read_dir(dir: &Path) -> Result<(Vec<Certificate<'static>>, Option<ClientCert>)> {
    let shown = dir.display();
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("--cert-dir {shown}"), e))?;
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let mut roots = Vec::new();
    let mut client = None;
    for p in &names {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p.display().to_string(), e));
        match ext {
            "crt" => {
                let pem = read(p)?;
                roots.extend(pem_certs(&pem, p)?);
            }
            "cert" if client.is_none() => {
                let key_path = p.with_extension("key");
                if !key_path.is_file() {
                    return Err(Error::Usage(format!(
                        "{}: a client certificate needs its key beside it ({})",
                        p.display(),
                        key_path.display()
                    )));
                }
                let chain = pem_certs(&read(p)?, p)?;
                let key = PrivateKey::from_pem(&read(&key_path)?).map_err(|e| {
                    Error::Format(format!(
                        "{}: not a PEM private key: {e}",
                        key_path.display()
                    ))
                })?;
                client = Some(ClientCert::new_with_certs(&chain, key));
            }
            _ => {}
        }
    }
    Ok((roots, client))
}

/// Every certificate in a PEM file.
fn pem_certs(pem: &[u8], path: &Path) -> Result<Vec<Certificate<'static>>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Format(format!("{}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Format(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect())
}
