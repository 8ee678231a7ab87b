//! The Rust [`mplane::client::Client`] against the reference component runtime (`mpcom` of
//! `mplane-sdk` 0.9.0) over mutual TLS on loopback, with the service module of
//! `support/peer.rs` ([`peer::REFERENCE_SERVICES`]). Needs `openssl` and a Python 3.11 able to
//! create the peer venv.

mod common;

#[path = "support/peer.rs"]
#[allow(clippy::incompatible_msrv)]
mod peer;

use std::sync::Arc;
use std::time::Duration;

use common::pki::Pki;
use mplane::client::{Client, Url};
use mplane::model::{Message, Statement, StatementKind, WhenText};
use mplane::registry::Registries;
use mplane::tls::Connector;
use mplane::value::Value;

fn find<'a>(caps: &'a [Statement], label: &str) -> &'a Statement {
    caps.iter()
        .find(|c| c.label.as_deref() == Some(label))
        .unwrap_or_else(|| panic!("no {label}"))
}

fn spec(cap: &Statement, when: &str) -> Statement {
    let mut s = cap.specification_for();
    s.set_parameter_value(
        "destination.ip4",
        &Value::Address("127.0.0.2".parse().unwrap()),
    )
    .unwrap();
    s.when = Some(WhenText::parse(when).unwrap());
    s.label = Some(format!("{}-0", cap.label.as_deref().unwrap_or("")));
    s.token = Some(s.default_token());
    s
}

fn statement(m: Message) -> Statement {
    match m {
        Message::Statement(s) => s,
        m => panic!("{}", m.unparse()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_against_reference_component() {
    let pki = Pki::new();
    let port = peer::free_port();
    let _peer = peer::ReferenceComponent::start(pki.dir(), &pki.tls_section(), port);

    let client = Client::new(
        Some(Connector::new(&pki.files("client")).unwrap()),
        Arc::new(Registries::default()),
    );
    let base = Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
    let caps = client
        .capabilities(&base.with_path("/capability"))
        .await
        .unwrap();
    assert_eq!(caps.len(), 3);

    // immediate result inline
    let s = spec(find(&caps, "echo-ip4"), "now");
    let r = statement(client.specify(&base, &s).await.unwrap());
    assert_eq!(r.kind, StatementKind::Result);
    assert_eq!(r.token, s.token);
    assert_eq!(r.rows().len(), 1);
    // the reference keeps a job returned inline until it is redeemed once
    // (the Rust component forgets it at once); then it is unknown
    let rec = r.derive(StatementKind::Receipt);
    let again = statement(client.redeem(&base, &rec).await.unwrap());
    assert_eq!(again.kind, StatementKind::Result);
    match client.redeem(&base, &rec).await.unwrap() {
        Message::Exception(e) => assert_eq!(e.message, "Unknown job"),
        m => panic!("{}", m.unparse()),
    }

    // long job: receipt after 5 s, interrupt, partial result by redemption
    let s = spec(find(&caps, "wait-ip4"), "now + 60s");
    let rec = statement(client.specify(&base, &s).await.unwrap());
    assert_eq!(rec.kind, StatementKind::Receipt);
    assert_eq!(rec.token, s.token);
    client.interrupt(&base, &rec).await.unwrap();
    let mut result = None;
    for _ in 0..50 {
        let m = statement(client.redeem(&base, &rec).await.unwrap());
        if m.kind == StatementKind::Result {
            result = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let result = result.expect("result after interrupt");
    assert_eq!(result.token, s.token);
    assert_eq!(result.rows().len(), 1);

    // a specification that fits no capability (an extra result column)
    let regs = Registries::default();
    let mut s = spec(find(&caps, "echo-ip4"), "now");
    s.add_result_column("hops.ip", &regs).unwrap();
    s.token = Some(s.default_token());
    match client.specify(&base, &s).await.unwrap() {
        Message::Exception(e) => assert_eq!(e.message, "No service registered for specification"),
        m => panic!("{}", m.unparse()),
    }

    // an identity without a role: nothing listed, and a specification is refused
    let outsider = Client::new(
        Some(Connector::new(&pki.files("supervisor")).unwrap()),
        Arc::new(Registries::default()),
    );
    let listed = outsider
        .capabilities(&base.with_path("/capability"))
        .await
        .unwrap();
    assert!(listed.is_empty(), "{} capabilities listed", listed.len());
    let s = spec(find(&caps, "echo-ip4"), "now");
    match outsider.specify(&base, &s).await.unwrap() {
        Message::Exception(e) => {
            assert_eq!(
                e.message,
                "User has no permission to request this capability"
            )
        }
        m => panic!("{}", m.unparse()),
    }

    // a repeated specification: receipt, then an envelope of results
    let s = spec(
        find(&caps, "tick-ip4"),
        "repeat now + 3s / 1s { now + 1s / 1s }",
    );
    let rec = statement(client.specify(&base, &s).await.unwrap());
    assert_eq!(rec.kind, StatementKind::Receipt);
    let mut envelope = None;
    for _ in 0..60 {
        match client.redeem(&base, &rec).await.unwrap() {
            Message::Envelope(e) if !e.contents.is_empty() => {
                envelope = Some(e);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let envelope = envelope.expect("an envelope of results");
    assert_eq!(envelope.token, s.token);
    assert!(envelope.contents.iter().all(|m| m.kind_name() == "result"));
}
