//! TLS: the hub serves HTTPS and WSS with a certificate the test makes; the
//! CLI and agents trust it through `--ca` / `MUSTER_CA`; SIGHUP loads a new
//! certificate without dropping connections; and plain HTTP off the loopback
//! is refused unless asked for on purpose.

use crate::harness::{Agent, AgentOpts, Hub, HubOpts, PATIENCE, cli_with_input, muster_command, path_str, run_to_end};
use std::path::{Path, PathBuf};

/// A certificate authority and a certificate it issued for 127.0.0.1 and
/// localhost, as PEM files in `dir`: (ca, cert, key).
fn issue(dir: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    issue_for(dir, tag, &["localhost", "127.0.0.1"])
}

/// A certificate authority and a certificate it issued for `names` (host
/// names or IP addresses), as PEM files in `dir`: (ca, cert, key).
pub(crate) fn issue_for(dir: &Path, tag: &str, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("muster test CA {tag}"));
    let ca_cert = ca.self_signed(&ca_key).expect("a CA certificate");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("a key");
    let leaf = rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
        .expect("leaf params")
        .signed_by(&key, &issuer)
        .expect("a certificate");
    let write = |name: &str, pem: String| {
        let path = dir.join(format!("{tag}-{name}"));
        std::fs::write(&path, pem).expect("a PEM file");
        path
    };
    (write("ca.pem", ca_cert.pem()), write("cert.pem", leaf.pem()), write("key.pem", key.serialize_pem()))
}

pub(crate) fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[tokio::test]
async fn a_hub_serves_https_and_wss_to_those_who_trust_its_ca_and_reloads_its_certificate_on_sighup() {
    let certs = tempfile::tempdir().expect("a directory");
    let (ca, cert, key) = issue(certs.path(), "first");
    let (cert_path, key_path) = (cert.clone(), key.clone());
    let extra: &'static [&'static str] =
        Box::leak(vec!["--tls-cert", leak(path_str(&cert)), "--tls-key", leak(path_str(&key))].into_boxed_slice());
    let hub = Hub::start_with(HubOpts { extra, ca: Some(ca.clone()), ..HubOpts::default() }).await;
    assert!(hub.url.starts_with("https://"), "{}", hub.url);

    // The CLI with the CA, and without it.
    let (code, out, err) = hub.cli(&["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli_with_input(&hub.url, &hub.token, &["status"], None).await;
    assert_ne!(code, 0, "a certificate nobody vouched for is refused");
    assert!(err.contains("certificate") && err.contains("--ca"), "{err}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::get(format!("http://{}/livez", hub.addr)).await;
    assert!(plain.is_err() || !plain.expect("a response").status().is_success(), "no plain HTTP on a TLS port");

    // An agent over WSS, trusting the CA through MUSTER_CA.
    let token = hub.add_agent("secure", &[]).await;
    let env = vec![("MUSTER_CA".to_owned(), path_str(&ca))];
    let _agent = Agent::spawn_with(&hub.url, "secure", &token, AgentOpts { env, ..AgentOpts::default() });
    hub.wait_connected("secure").await;
    let id = hub.shell_task("echo over tls").await;
    assert_eq!(hub.wait_state(&id, &["succeeded", "failed"]).await["state"], "succeeded");
    assert_eq!(hub.output(&id).await.trim(), "over tls");

    // A new certificate from another CA, loaded on SIGHUP.
    let (new_ca, new_cert, new_key) = issue(certs.path(), "second");
    std::fs::copy(&new_cert, &cert_path).expect("the new certificate");
    std::fs::copy(&new_key, &key_path).expect("the new key");
    let pgid = hub.process.as_ref().expect("the hub runs").pgid();
    // SAFETY: signalling the hub the test spawned.
    unsafe {
        libc::kill(pgid, libc::SIGHUP);
    }
    hub.wait_until("the certificate to be reloaded", || async {
        (!hub.events("kind=tls.reloaded").await.is_empty()).then_some(())
    })
    .await;
    let renewed = crate::harness::test_client(Some(&new_ca));
    let live = renewed.get(format!("{}/livez", hub.url)).send().await.expect("the new certificate is served");
    assert!(live.status().is_success());
    let stale = crate::harness::test_client(Some(&ca)).get(format!("{}/livez", hub.url)).send().await;
    assert!(stale.is_err(), "new connections no longer get the old certificate");
    // The agent's connection, opened before, was not dropped.
    let agent = hub.get("/agents/secure").await;
    assert_eq!(agent["connected"], true, "{agent}");
    let events = hub.events("kind=agent.disconnected").await;
    assert!(events.is_empty(), "the reload dropped no connection: {events:?}");
}

#[tokio::test]
async fn a_hub_refuses_plain_http_off_the_loopback_unless_asked_on_purpose() {
    let dir = tempfile::tempdir().expect("a directory");
    let data = path_str(dir.path());
    let mut refused = muster_command(&["--data-dir", &data, "hub", "--listen", "0.0.0.0:0"]);
    let (code, _, err) = run_to_end(&mut refused, PATIENCE).await;
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("refusing to listen on 0.0.0.0:0 without TLS") && err.contains("--insecure-listen"), "{err}");
    assert!(!dir.path().join("muster.db").exists(), "refused before anything was opened");

    let mut on_purpose = muster_command(&[
        "--data-dir",
        &data,
        "hub",
        "--listen",
        "0.0.0.0:0",
        "--insecure-listen",
        "--backup-interval",
        "0",
    ]);
    let mut group = muster_agent::process::ProcessGroup::spawn(&mut on_purpose).expect("the hub starts");
    let stderr = group.child_mut().stderr.take().expect("stderr is piped");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let listening = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening on http://0.0.0.0:") {
                return Some(line);
            }
        }
        None
    })
    .await
    .expect("the hub starts in time");
    assert!(listening.is_some(), "with --insecure-listen the hub listens off the loopback");
    group.signal(libc::SIGKILL);
    let _ = group.wait().await;
}
