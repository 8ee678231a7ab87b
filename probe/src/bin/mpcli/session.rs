//! The connection to a component: the client with its registries (learning the ones the
//! component serves), the component's URLs, and waiting on receipts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mplane::client::{Client, ClientError, Url};
use mplane::config::{Config, TlsFiles};
use mplane::model::{Message, ModelError, Statement, StatementKind};
use mplane::registry::{Registries, RegistryError};
use mplane::tls::Connector;
use tokio::signal::unix::Signal;

use super::{Cli, Outcome, WaitArgs, output, put, put_line};

/// Where we talk to: the client, its registries, and the component's URLs.
pub(crate) struct Session {
    connector: Option<Connector>,
    pub(crate) registries: Registries,
    client: Client,
    /// Where capabilities are listed.
    capability_url: Option<Url>,
    /// Where specifications without a link and redemptions go.
    default_url: Option<Url>,
    /// Registry URIs fetched from the component (each once).
    fetched: Vec<String>,
}

impl Session {
    pub(crate) fn new(cli: &Cli) -> Result<Session> {
        let config = cli.config.as_deref().map(Config::read).transpose()?;
        let client_cfg = config.as_ref().and_then(|c| c.client.as_ref());
        let tls = match (&cli.cert, &cli.key, &cli.ca_chain) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca_chain: ca.clone(),
                crl: None,
            }),
            (None, None, None) => config.as_ref().and_then(|c| c.tls.clone()),
            _ => bail!("--cert, --key and --ca-chain go together"),
        };
        let connector = tls
            .as_ref()
            .map(Connector::new)
            .transpose()
            .context("TLS files")?;
        let mut registries = Registries::default();
        let preload = client_cfg.and_then(|c| c.registry_preload.clone());
        for file in preload.iter().chain(&cli.registry) {
            registries
                .load_file(file)
                .with_context(|| format!("registry {}", file.display()))?;
        }
        let (capability_url, default_url) = match &cli.url {
            Some(u) => {
                let url = Url::parse(u)?;
                if url.path.is_empty() || url.path == "/" {
                    (Some(url.with_path("/capability")), Some(url.with_path("/")))
                } else {
                    (Some(url.clone()), Some(url.with_path("/")))
                }
            }
            None => {
                let default = client_cfg
                    .and_then(|c| c.default_url.as_deref())
                    .map(Url::parse)
                    .transpose()?;
                let caps = match client_cfg.and_then(|c| c.capability_url.as_deref()) {
                    Some(u) => Some(Url::parse(u)?),
                    None => default.as_ref().map(|d| d.with_path("/capability")),
                };
                let default = default.or_else(|| caps.as_ref().map(|c| c.with_path("/")));
                (caps, default)
            }
        };
        let client = Client::new(connector.clone(), Arc::new(registries.clone()));
        Ok(Session {
            connector,
            registries,
            client,
            capability_url,
            default_url,
            fetched: Vec::new(),
        })
    }

    /// The component's URL for messages without a link of their own.
    pub(crate) fn base(&self) -> Result<Url> {
        self.default_url.clone().ok_or_else(|| {
            anyhow!("no component URL: give --url, or default-url / capability-url in [client]")
        })
    }

    /// Where a receipt's redemption or interrupt goes.
    pub(crate) fn receipt_url(&self, to: Option<&str>) -> Result<Url> {
        match to {
            Some(t) => Ok(Url::parse(t)?),
            None => self.base(),
        }
    }

    /// The capabilities offered at the capability URL.
    pub(crate) async fn capabilities(&mut self) -> Result<Vec<Statement>> {
        let url = self.capability_url.clone().ok_or_else(|| {
            anyhow!("no component URL: give --url, or default-url / capability-url in [client]")
        })?;
        loop {
            match self.client.capabilities(&url).await {
                Err(e) => self.learn_registry(e, &url).await?,
                Ok(caps) => return Ok(caps),
            }
        }
    }

    /// Sends `msg` to `to`; the reply.
    pub(crate) async fn send(&mut self, to: &Url, msg: &Message) -> Result<Message> {
        loop {
            match self.client.send(to, msg).await {
                Err(e) => self.learn_registry(e, to).await?,
                Ok(m) => return Ok(m),
            }
        }
    }

    /// When `e` is a reply naming a registry we lack, loads it from the component at `from`,
    /// which serves its registries at `/registry/<name>` (this project's registry URIs are
    /// `https://mplane-rs.invalid/registry/<name>` on every probe, doc/protocol.md), so that
    /// the request can be made again; any other error is returned as it is. Nothing is
    /// fetched from anywhere but the component itself, over the same mutual TLS.
    async fn learn_registry(&mut self, e: ClientError, from: &Url) -> Result<()> {
        let uri = match &e {
            ClientError::Parse(ModelError::Registry(RegistryError::Unknown(uri))) => uri.clone(),
            _ => return Err(e).with_context(|| from.authority()),
        };
        let path = match Url::parse(&uri) {
            Ok(u) if u.path.starts_with("/registry/") && !self.fetched.contains(&uri) => u.path,
            _ => bail!(
                "the component's messages use the registry {uri}, which is not loaded and not \
                 served by {}: load it with --registry or registry_preload",
                from.authority()
            ),
        };
        self.fetched.push(uri.clone());
        let url = from.with_path(&path);
        let reply = self
            .client
            .request(hyper::Method::GET, &url, None)
            .await
            .with_context(|| format!("fetch the registry {uri} from {}", url.authority()))?;
        if reply.status != hyper::StatusCode::OK {
            bail!(
                "the registry {uri} is not loaded, and {} answers HTTP {} for {path}: load it \
                 with --registry or registry_preload",
                url.authority(),
                reply.status
            );
        }
        let text = std::str::from_utf8(&reply.body)
            .map_err(|_| anyhow!("the registry {uri} is not UTF-8"))?;
        let reg = self
            .registries
            .load_str(text)
            .with_context(|| format!("the registry {uri}"))?;
        if self.registries.get(&uri).is_none() {
            bail!("{uri} served the registry {}, not itself", reg.uri());
        }
        self.client = Client::new(self.connector.clone(), Arc::new(self.registries.clone()));
        Ok(())
    }

    /// Downloads every export file `reply` names into `dir`: each under a hidden temporary
    /// name first, renamed once complete and of the size the result states.
    async fn download(&self, reply: &Message, dir: &Path) -> Result<()> {
        let files = output::export_files(reply);
        if files.is_empty() {
            eprintln!("the result names no file to download");
            return Ok(());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        for (url, size) in files {
            let u = Url::parse(&url).with_context(|| format!("export URL {url:?}"))?;
            let name = u
                .path
                .rsplit('/')
                .next()
                .filter(|n| {
                    !n.is_empty()
                        && !n.starts_with('.')
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-=".contains(&b))
                })
                .ok_or_else(|| anyhow!("export URL {url:?} names no file"))?;
            let dest = dir.join(name);
            let part = dir.join(format!(".{name}.part"));
            let result = async {
                let mut f = tokio::fs::File::create(&part)
                    .await
                    .with_context(|| format!("create {}", part.display()))?;
                let n = self
                    .client
                    .download(&u, &mut f)
                    .await
                    .with_context(|| format!("download {url}"))?;
                f.sync_all()
                    .await
                    .with_context(|| format!("write {}", part.display()))?;
                if let Some(want) = size
                    && want != n
                {
                    bail!("download {url}: {n} bytes, the result says {want}");
                }
                tokio::fs::rename(&part, &dest)
                    .await
                    .with_context(|| format!("rename to {}", dest.display()))?;
                Ok(n)
            }
            .await;
            match result {
                Ok(n) => eprintln!("downloaded {} ({n} bytes)", dest.display()),
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Prints what `reply` settles: a result or envelope, or (with `wait`) the result a
    /// receipt is redeemed for; an exception is an error. Ctrl-C (`sigint`) while waiting
    /// interrupts the job and prints its partial result; a second one gives up waiting and
    /// prints the receipt.
    pub(crate) async fn finish(
        &mut self,
        to: &Url,
        mut reply: Message,
        opts: &WaitArgs,
        wait: bool,
        sigint: &mut Signal,
    ) -> Result<Outcome> {
        let poll = Duration::from_secs_f64(opts.poll);
        let deadline = opts
            .timeout
            .map(|s| Instant::now() + Duration::from_secs_f64(s));
        let mut interrupted = false;
        loop {
            let receipt = match reply {
                Message::Exception(e) => bail!("exception from the component: {}", e.message),
                Message::Statement(s) if s.kind == StatementKind::Receipt => s,
                Message::Statement(ref s) if s.kind != StatementKind::Result => {
                    bail!("the component answered with a {}", reply.kind_name())
                }
                done => {
                    put(&output::results(&done, opts.format));
                    if let Some(dir) = &opts.download {
                        self.download(&done, dir).await?;
                    }
                    return Ok(if interrupted {
                        Outcome::Interrupted
                    } else {
                        Outcome::Done
                    });
                }
            };
            if !wait {
                put_line(&Message::Statement(receipt).unparse());
                eprintln!("not ready yet: redeem it later");
                return Ok(Outcome::TimedOut);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                put_line(&Message::Statement(receipt).unparse());
                eprintln!("still running after --timeout: redeem the receipt above later");
                return Ok(Outcome::TimedOut);
            }
            let stop = tokio::select! {
                biased;
                _ = sigint.recv() => true,
                _ = tokio::time::sleep(poll) => false,
            };
            if stop && interrupted {
                put_line(&Message::Statement(receipt).unparse());
                eprintln!(
                    "interrupted again: not waiting for the partial result (the receipt above)"
                );
                return Ok(Outcome::Interrupted);
            }
            let kind = if stop {
                interrupted = true;
                eprintln!("interrupting the job");
                StatementKind::Interrupt
            } else {
                StatementKind::Redemption
            };
            reply = self
                .send(to, &Message::Statement(receipt.derive(kind)))
                .await?;
        }
    }
}
