//! Load generator for the mPlane client-initiated workflow over HTTPS with
//! mutual TLS: fetches the capability, then POSTs fresh specifications
//! (unique label and token each) over keep-alive HTTP/1.1 connections, one
//! per client, and validates every reply (an mPlane result with the
//! specification's token; anything else is an error).
//!
//! * Closed loop (default): each client sends, waits for the reply, repeats.
//! * Open loop (`--rate R`): requests are scheduled at a fixed total rate
//!   spread over the clients; latency is measured from the *intended* send
//!   time (coordinated-omission correction).
//!
//! ```text
//! mplane_load --url https://127.0.0.1:PORT --ca ca.crt --cert client.crt --key client.key \
//!     --clients 16 --duration 10 [--rate 5000] [--label interop-rows-ip4] [--param packets.ip=1]
//! ```
//!
//! Loopback only; bounded in time (`--duration`, at most 600 s) and in
//! clients (at most 4096).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use mplane::client::{Client, Url};
use mplane::config::TlsFiles;
use mplane::model::{MEDIA_TYPE, Message, WhenText};
use mplane::registry::Registries;
use mplane::tls::Connector;
use mplane::value::Value;
use tokio::net::TcpStream;

const MAX_CLIENTS: usize = 4096;
const MAX_DURATION_S: f64 = 600.0;
const LABEL_MARK: &str = "@@LABEL@@";
const TOKEN_MARK: &str = "@@TOKEN@@";

struct Args {
    url: String,
    tls: TlsFiles,
    clients: usize,
    duration: Duration,
    rate: Option<f64>,
    label: String,
    params: Vec<(String, String)>,
}

fn usage() -> anyhow::Error {
    anyhow!(
        "usage: mplane_load --url https://127.0.0.1:PORT --ca F --cert F --key F \
         --clients N --duration S [--rate R] [--label L] [--param name=value ...]"
    )
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut url, mut ca, mut cert, mut key) = (None, None, None, None);
    let (mut clients, mut duration, mut rate) = (1usize, 10.0f64, None);
    let mut label = "interop-rows-ip4".to_string();
    let mut params = Vec::new();
    while let Some(a) = it.next() {
        let mut v = || it.next().ok_or_else(usage);
        match a.as_str() {
            "--url" => url = Some(v()?),
            "--ca" => ca = Some(PathBuf::from(v()?)),
            "--cert" => cert = Some(PathBuf::from(v()?)),
            "--key" => key = Some(PathBuf::from(v()?)),
            "--clients" => clients = v()?.parse().context("--clients")?,
            "--duration" => duration = v()?.parse().context("--duration")?,
            "--rate" => rate = Some(v()?.parse::<f64>().context("--rate")?),
            "--label" => label = v()?,
            "--param" => {
                let p = v()?;
                let (n, x) = p
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--param {p}: name=value"))?;
                params.push((n.to_string(), x.to_string()));
            }
            _ => return Err(usage()),
        }
    }
    if clients == 0 || clients > MAX_CLIENTS {
        bail!("--clients must be 1..={MAX_CLIENTS}");
    }
    if !(duration > 0.0 && duration <= MAX_DURATION_S) {
        bail!("--duration must be in (0, {MAX_DURATION_S}] seconds");
    }
    if let Some(r) = rate
        && !(r > 0.0 && r <= 1e6)
    {
        bail!("--rate must be in (0, 1e6]");
    }
    if params.is_empty() {
        params.push(("packets.ip".into(), "1".into()));
    }
    Ok(Args {
        url: url.ok_or_else(usage)?,
        tls: TlsFiles {
            cert: cert.ok_or_else(usage)?,
            key: key.ok_or_else(usage)?,
            ca_chain: ca.ok_or_else(usage)?,
            crl: None,
        },
        clients,
        duration: Duration::from_secs_f64(duration),
        rate,
        label,
        params,
    })
}

/// The specification as JSON with placeholders for label and token.
async fn template(client: &Client, base: &Url, a: &Args) -> Result<String> {
    let caps = client
        .capabilities(&base.with_path("/capability"))
        .await
        .context("capability discovery")?;
    let cap = caps
        .iter()
        .find(|c| c.label.as_deref() == Some(a.label.as_str()))
        .ok_or_else(|| anyhow!("no capability {:?} at {}", a.label, a.url))?;
    let mut spec = cap.specification_for();
    spec.set_parameter_value(
        "destination.ip4",
        &Value::Address("127.0.0.2".parse().context("address")?),
    )?;
    for (n, v) in &a.params {
        let value = match v.parse::<u64>() {
            Ok(n) => Value::Natural(n),
            Err(_) => Value::String(v.clone()),
        };
        spec.set_parameter_value(n, &value)?;
    }
    spec.when = Some(WhenText::parse("now + 1s / 1s")?);
    spec.label = Some(LABEL_MARK.into());
    spec.token = Some(TOKEN_MARK.into());
    let json = Message::Statement(spec).unparse();
    if !json.contains(LABEL_MARK) || !json.contains(TOKEN_MARK) {
        bail!("specification template lacks label/token: {json}");
    }
    Ok(json)
}

struct Shared {
    connector: Connector,
    base: Url,
    template: String,
    label: String,
    run_id: u64,
    clients: u32,
    ok: AtomicU64,
    errors: AtomicU64,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(sh: &Shared) -> Result<Sender> {
    let tcp = TcpStream::connect((sh.base.host.as_str(), sh.base.port)).await?;
    tcp.set_nodelay(true)?;
    let (tls, _peer) = sh.connector.connect_stream(&sh.base.host, tcp).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One specification; `Ok(true)` for a valid result with the right token.
async fn one(sh: &Shared, sender: &mut Sender, client: usize, seq: u64) -> Result<bool> {
    let token = format!("{:016x}{:08x}{:08x}", sh.run_id, client, seq);
    let label = format!("{}-{client}-{seq}", sh.label);
    let body = sh
        .template
        .replacen(TOKEN_MARK, &token, 1)
        .replacen(LABEL_MARK, &label, 1);
    let authority = format!("{}:{}", sh.base.host, sh.base.port);
    let req = Request::builder()
        .method(Method::POST)
        .uri(sh.base.path.as_str())
        .header(HOST, authority)
        .header(CONTENT_TYPE, MEDIA_TYPE)
        .body(Full::new(Bytes::from(body)))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK {
        return Ok(false);
    }
    let v: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Ok(false),
    };
    Ok(v.get("result").is_some() && v.get("token").and_then(|t| t.as_str()) == Some(&token))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_micros().max(1) as u64);
}

async fn run_client(
    sh: Arc<Shared>,
    client: usize,
    start: Instant,
    end: Instant,
    interval: Option<Duration>,
) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut sender = match connect(&sh).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("client {client}: connect: {e:#}");
            sh.errors.fetch_add(1, Ordering::Relaxed);
            return h;
        }
    };
    let mut seq = 0u64;
    loop {
        // open loop: the intended send time of request `seq` of this client
        let intended = match interval {
            Some(iv) => {
                let t = start + iv * client as u32 / sh.clients + iv.mul_f64(seq as f64);
                if t >= end {
                    break;
                }
                tokio::time::sleep_until(t.into()).await;
                t
            }
            None => {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                t
            }
        };
        match one(&sh, &mut sender, client, seq).await {
            Ok(true) => {
                sh.ok.fetch_add(1, Ordering::Relaxed);
                record(&mut h, intended.elapsed());
            }
            Ok(false) => {
                sh.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                sh.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("client {client}: {e:#}");
                match connect(&sh).await {
                    Ok(s) => sender = s,
                    Err(_) => return h,
                }
            }
        }
        seq += 1;
    }
    h
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let base = Url::parse(&a.url)?;
    if !base.tls {
        bail!("--url must be https://");
    }
    if base.host != "127.0.0.1" && base.host != "::1" && base.host != "localhost" {
        bail!("loopback only: {}", base.host);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let connector = Connector::new(&a.tls)?;
        let client = Client::new(Some(connector.clone()), Arc::new(Registries::default()));
        let template = template(&client, &base, &a).await?;
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64;
        let sh = Arc::new(Shared {
            connector,
            base: base.with_path("/"),
            template,
            label: a.label.clone(),
            run_id,
            clients: a.clients as u32,
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        // per-client interval so that the total is `rate`
        let interval = a
            .rate
            .map(|r| Duration::from_secs_f64(a.clients as f64 / r));
        // open loop: connect all clients first (startup margin), then start
        let start = Instant::now()
            + if interval.is_some() {
                Duration::from_millis(500 + 2 * a.clients as u64)
            } else {
                Duration::ZERO
            };
        let end = start + a.duration;
        let tasks: Vec<_> = (0..a.clients)
            .map(|c| tokio::spawn(run_client(sh.clone(), c, start, end, interval)))
            .collect();
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for t in tasks {
            h.add(t.await?)?;
        }
        let elapsed = start.elapsed().as_secs_f64().max(1e-9);
        let ok = sh.ok.load(Ordering::Relaxed);
        let errors = sh.errors.load(Ordering::Relaxed);
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let mode = match a.rate {
            Some(r) => format!("open loop, target {r:.0}/s"),
            None => "closed loop".into(),
        };
        println!(
            "{mode}, {} clients, {:.1} s: {ok} results, {errors} errors, {:.1} spec/s; \
             latency ms p50 {:.3} p99 {:.3} p999 {:.3} max {:.3}",
            a.clients,
            elapsed,
            ok as f64 / elapsed,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0,
        );
        Ok(())
    })
}
