//! HTTPS and WSS: the hub's certificate and key (PEM), reloaded on SIGHUP
//! without touching connections already open, and optionally the
//! certificate authority that agents' client certificates must chain to.

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The files the hub serves TLS from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, every connection must present a client certificate this
    /// authority issued (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// The configuration in force; each new connection takes the latest.
pub(crate) struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl Tls {
    pub(crate) fn load(files: &TlsFiles) -> anyhow::Result<Tls> {
        Ok(Tls { files: files.clone(), current: RwLock::new(Arc::new(server_config(files)?)) })
    }

    /// Reads the files again; on an error the configuration in force stays.
    pub(crate) fn reload(&self) -> anyhow::Result<()> {
        let fresh = Arc::new(server_config(&self.files)?);
        *self.current.write().expect("tls lock poisoned") = fresh;
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().expect("tls lock poisoned").clone())
    }
}

fn certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("the {what} {} is not valid PEM", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("the {what} {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn server_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let chain = certs(&files.cert, "certificate file")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read a PEM private key from {}", files.key.display()))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs(ca, "client CA file")? {
                roots.add(cert).with_context(|| format!("{} holds a certificate rustls refuses", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .context("cannot verify client certificates with that CA")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).with_context(|| {
        format!("{} and {} do not make a certificate and its key", files.cert.display(), files.key.display())
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
