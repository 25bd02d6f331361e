//! TLS for SIP over TLS (RFC 3261 §26.2.1) and secure WebSocket (RFC 7118 §5): the server
//! certificate, configured or self-signed on first start, and the client side for outbound
//! connections. rustls with the `ring` provider.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{NetConfig, NetError};

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

pub(crate) struct TlsContext {
    pub(crate) acceptor: TlsAcceptor,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsContext {
    /// The configured certificate and key, or else the self-signed pair in `tls_dir`, generated
    /// there if it does not exist yet.
    pub(crate) fn load_or_generate(config: &NetConfig) -> Result<Self, NetError> {
        let (cert_path, key_path) = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (None, None) => self_signed(&config.tls_dir, &config.tls_names)?,
            _ => {
                return Err(NetError::TlsConfig(
                    "tls_cert and tls_key must be configured together".to_owned(),
                ))
            }
        };
        let certs = load_certs(&cert_path)?;
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| NetError::TlsFile {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::TlsConfig(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| NetError::TlsFile {
                path: key_path,
                reason: e.to_string(),
            })?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let error = |reason: String| NetError::TlsFile {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no certificate in the file".to_owned()));
    }
    Ok(certs)
}

/// Paths of the self-signed certificate and key in `dir`, generating both if either is missing.
fn self_signed(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), NetError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        tracing::debug!(cert = %cert_path.display(), "reusing the self-signed TLS certificate");
        return Ok((cert_path, key_path));
    }
    let io_error = |path: &Path, e: std::io::Error| NetError::TlsFile {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let mut names = names.to_vec();
    if names.is_empty() {
        names.push("localhost".to_owned());
    }
    let generation = |e: rcgen::Error| NetError::CertificateGeneration(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(generation)?;
    let mut params = rcgen::CertificateParams::new(names.clone()).map_err(generation)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].clone());
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Confab self-signed");
    let cert = params.self_signed(&key).map_err(generation)?;
    // The key first: a certificate without its key must never be taken for a usable pair.
    write_atomically(&key_path, key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| io_error(&key_path, e))?;
    write_atomically(&cert_path, cert.pem().as_bytes(), 0o644)
        .map_err(|e| io_error(&cert_path, e))?;
    tracing::info!(
        cert = %cert_path.display(), ?names,
        "generated a self-signed TLS certificate; configure a real one for production"
    );
    Ok((cert_path, key_path))
}

/// Writes to a temporary file with `mode` and renames it into place, so a crash never leaves a
/// half-written file that a later start would try to use.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

/// The client side for outbound TLS: the system's trusted roots plus `extra` (PEM), if given.
pub(crate) fn connector(extra: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra {
        let certs = load_certs(path).map_err(|e| e.to_string())?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("no trusted root certificates".to_owned());
    }
    tracing::debug!(system_roots = added, "outbound TLS client configured");
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
