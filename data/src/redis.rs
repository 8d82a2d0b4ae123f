//! Redis: a set of multiplexed, self-reconnecting connections (standalone, or to the master
//! that Redis Sentinel names) or one cluster connection, opened on first use; pub/sub on a
//! dedicated connection.
//!
//! Commands arrive as argument lists (the Python side builds them and applies `key_prefix`).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use tokio::sync::OnceCell;

pub use redis::Value;

use crate::error::{Error, Result};

/// `RedisConfig`'s connection fields.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub pool_size: u32,
    pub connection_timeout_secs: f64,
    pub min_idle: u32,
    pub idle_timeout_secs: f64,
    pub cluster_mode: bool,
    pub database: u32,
    pub password: Option<String>,
    pub tls: bool,
}

enum Conns {
    Single(Arc<Slots>),
    Cluster(ClusterConnection),
}

/// Where standalone connections go: one server, or the master that the Sentinels name for a
/// service. The Sentinels are asked again whenever a connection to the master fails (refused,
/// dropped, or `READONLY` from a demoted master), so a failover is followed.
enum Target {
    Fixed(redis::Client),
    Sentinel {
        sentinel: tokio::sync::Mutex<SentinelClient>,
        timeout: Duration,
    },
}

impl Target {
    async fn client(&self) -> Result<redis::Client> {
        match self {
            Target::Fixed(c) => Ok(c.clone()),
            Target::Sentinel { sentinel, timeout } => {
                let mut s = sentinel.lock().await;
                Ok(tokio::time::timeout(*timeout, s.async_get_client())
                    .await
                    .map_err(|_| unreachable_err("Redis Sentinel", *timeout))??)
            }
        }
    }

    /// Should this error drop the connection so the next one asks the Sentinels again?
    fn rediscover_on(&self, e: &redis::RedisError) -> bool {
        matches!(self, Target::Sentinel { .. })
            && (e.is_io_error()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.kind() == redis::ErrorKind::ReadOnly)
    }
}

/// `pool_size` multiplexed connections used round-robin. The first `min_idle` open at first
/// use and stay; the others open when their turn comes and close after `idle_timeout_secs`
/// unused (a sweeper task checks).
struct Slots {
    target: Target,
    cfg: redis::aio::ConnectionManagerConfig,
    timeout: Duration,
    min_idle: usize,
    idle: Option<Duration>,
    slots: Vec<tokio::sync::Mutex<Option<(ConnectionManager, Instant)>>>,
}

impl Slots {
    async fn get(&self, i: usize) -> Result<ConnectionManager> {
        let mut slot = self.slots[i].lock().await;
        if let Some((c, used)) = slot.as_mut() {
            *used = Instant::now();
            return Ok(c.clone());
        }
        let client = self.target.client().await?;
        let c = tokio::time::timeout(
            self.timeout,
            client.get_connection_manager_with_config(self.cfg.clone()),
        )
        .await
        .map_err(|_| unreachable_err("Redis", self.timeout))??;
        *slot = Some((c.clone(), Instant::now()));
        Ok(c)
    }

    /// Run `cmd` or `pipe` on slot `i`; a connection error in Sentinel mode forgets the
    /// connection (the next command asks the Sentinels where the master is now).
    async fn query<T, F, Fut>(&self, i: usize, run: F) -> Result<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let c = self.get(i).await?;
        match run(c).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if self.target.rediscover_on(&e) {
                    *self.slots[i].lock().await = None;
                }
                Err(e.into())
            }
        }
    }

    /// Close the connections above `min_idle` unused for `idle`; ends with the client.
    async fn sweep(self: Arc<Self>) {
        let Some(idle) = self.idle else { return };
        let every = (idle / 2).max(Duration::from_millis(200));
        let me = Arc::downgrade(&self);
        drop(self);
        loop {
            tokio::time::sleep(every).await;
            let Some(this) = me.upgrade() else { return };
            for slot in &this.slots[this.min_idle.min(this.slots.len())..] {
                if let Ok(mut s) = slot.try_lock() {
                    if s.as_ref().is_some_and(|(_, used)| used.elapsed() >= idle) {
                        *s = None;
                    }
                }
            }
        }
    }

    fn open(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.try_lock().map(|g| g.is_some()).unwrap_or(true))
            .count()
    }
}

/// A Redis client.
pub struct Redis {
    opts: Options,
    /// Standalone: the server; cluster: every seed node; Sentinel: the Sentinels.
    nodes: Vec<ConnectionInfo>,
    /// Sentinel: the master's service name.
    master: Option<String>,
    conns: OnceCell<Conns>,
    next: AtomicUsize,
}

fn timeout(o: &Options) -> Duration {
    Duration::try_from_secs_f64(o.connection_timeout_secs).unwrap_or(Duration::from_secs(5))
}

fn node_info(url: &str, o: &Options) -> Result<ConnectionInfo> {
    let url = url.trim();
    let url = if o.tls && url.starts_with("redis://") {
        url.replacen("redis://", "rediss://", 1)
    } else {
        url.to_owned()
    };
    let mut info = url
        .as_str()
        .into_connection_info()
        .map_err(|e| Error::Config(format!("bad Redis URL {url:?}: {e}")))?;
    if o.database != 0 {
        info.redis.db = i64::from(o.database);
    }
    if let Some(p) = &o.password {
        info.redis.password = Some(p.clone());
    }
    if o.tls && !matches!(info.addr, ConnectionAddr::TcpTls { .. }) {
        return Err(Error::Config("tls=True needs a redis:// or rediss:// TCP URL".into()));
    }
    Ok(info)
}

impl Redis {
    /// Check the options; nothing is opened until the first command.
    pub fn new(opts: Options) -> Result<Self> {
        let url = opts.url.trim();
        if url.starts_with("redis+sentinel://") || url.starts_with("redis-sentinel://") {
            let rest = url.split_once("://").map_or("", |(_, r)| r);
            let (hosts, master) = rest.split_once('/').unwrap_or((rest, ""));
            let master = master.split('/').next().unwrap_or("");
            if hosts.is_empty() {
                return Err(Error::Config("a sentinel URL needs at least one sentinel host".into()));
            }
            if master.is_empty() {
                return Err(Error::Config(
                    "a sentinel URL needs the master's name: redis+sentinel://host:26379/mymaster".into(),
                ));
            }
            if opts.cluster_mode {
                return Err(Error::Config(
                    "cluster_mode and a sentinel URL exclude each other".into(),
                ));
            }
            let scheme = if opts.tls { "rediss" } else { "redis" };
            let nodes = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| {
                    // A Sentinel listens on 26379 unless told otherwise.
                    let h = if h.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
                        h.to_owned()
                    } else {
                        format!("{h}:26379")
                    };
                    format!("{scheme}://{h}")
                        .as_str()
                        .into_connection_info()
                        .map_err(|e| Error::Config(format!("bad sentinel address {h:?}: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let master = Some(master.to_owned());
            return Ok(Self {
                opts,
                nodes,
                master,
                conns: OnceCell::new(),
                next: AtomicUsize::new(0),
            });
        }
        if opts.cluster_mode && opts.database != 0 {
            return Err(Error::Config(format!(
                "Redis Cluster has only database 0; database={} cannot be used with cluster_mode",
                opts.database
            )));
        }
        let urls: Vec<&str> = url.split(',').filter(|s| !s.trim().is_empty()).collect();
        if urls.is_empty() {
            return Err(Error::Config("RedisConfig.url is empty".into()));
        }
        if urls.len() > 1 && !opts.cluster_mode {
            return Err(Error::Config(
                "several Redis URLs are cluster seed nodes: use RedisConfig.cluster(...)".into(),
            ));
        }
        let nodes = urls.iter().map(|u| node_info(u, &opts)).collect::<Result<Vec<_>>>()?;
        if opts.cluster_mode && nodes.iter().any(|n| n.redis.db != 0) {
            return Err(Error::Config(
                "Redis Cluster has only database 0: drop the /N from the URL".into(),
            ));
        }
        Ok(Self {
            opts,
            nodes,
            master: None,
            conns: OnceCell::new(),
            next: AtomicUsize::new(0),
        })
    }

    async fn conns(&self) -> Result<&Conns> {
        self.conns
            .get_or_try_init(|| async {
                let t = timeout(&self.opts);
                if self.opts.cluster_mode {
                    let mut b = redis::cluster::ClusterClient::builder(self.nodes.clone())
                        .connection_timeout(t)
                        .response_timeout(t.max(Duration::from_secs(5)));
                    if let Some(p) = &self.opts.password {
                        b = b.password(p.clone());
                    }
                    let client = b.build()?;
                    let conn = tokio::time::timeout(t, client.get_async_connection())
                        .await
                        .map_err(|_| unreachable_err("Redis Cluster", t))??;
                    return Ok(Conns::Cluster(conn));
                }
                let n = self.opts.pool_size.clamp(1, 64) as usize;
                let slots = Arc::new(Slots {
                    target: self.target()?,
                    cfg: redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(t)
                        // One quick retry. The crate's backoff starts at a second and grows by
                        // its factor, so a wrong password or a refused connection would
                        // otherwise wait out connection_timeout_secs instead of failing.
                        .set_number_of_retries(1)
                        .set_max_delay(100),
                    timeout: t,
                    min_idle: (self.opts.min_idle as usize).min(n),
                    idle: (self.opts.idle_timeout_secs > 0.0)
                        .then(|| Duration::try_from_secs_f64(self.opts.idle_timeout_secs).ok())
                        .flatten(),
                    slots: (0..n).map(|_| tokio::sync::Mutex::new(None)).collect(),
                });
                // Open the first one (fail now if the server is not there) and the other warm ones.
                for i in 0..slots.min_idle.max(1) {
                    slots.get(i).await?;
                }
                tokio::spawn(slots.clone().sweep());
                Ok(Conns::Single(slots))
            })
            .await
    }

    fn target(&self) -> Result<Target> {
        let Some(master) = &self.master else {
            return Ok(Target::Fixed(redis::Client::open(self.nodes[0].clone())?));
        };
        let node = SentinelNodeConnectionInfo {
            tls_mode: self.opts.tls.then_some(redis::TlsMode::Secure),
            redis_connection_info: Some(redis::RedisConnectionInfo {
                db: i64::from(self.opts.database),
                password: self.opts.password.clone(),
                ..Default::default()
            }),
        };
        let sentinel = SentinelClient::build(
            self.nodes.clone(),
            master.clone(),
            Some(node),
            SentinelServerType::Master,
        )?;
        Ok(Target::Sentinel {
            sentinel: tokio::sync::Mutex::new(sentinel),
            timeout: timeout(&self.opts),
        })
    }

    /// Run one command (`args[0]` is its name).
    pub async fn cmd(&self, args: Vec<Vec<u8>>) -> Result<Value> {
        let mut cmd = redis::Cmd::new();
        for a in args {
            cmd.arg(a);
        }
        Ok(match self.conns().await? {
            Conns::Single(slots) => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % slots.slots.len();
                slots
                    .query(i, |mut c| async move { cmd.query_async(&mut c).await })
                    .await?
            }
            Conns::Cluster(c) => cmd.query_async(&mut c.clone()).await?,
        })
    }

    /// Connections open now (standalone; a cluster connection counts as one).
    pub fn open_connections(&self) -> usize {
        match self.conns.get() {
            None => 0,
            Some(Conns::Single(slots)) => slots.open(),
            Some(Conns::Cluster(_)) => 1,
        }
    }

    /// Several commands in one round trip (`atomic`: inside MULTI/EXEC).
    pub async fn pipeline(&self, cmds: Vec<Vec<Vec<u8>>>, atomic: bool) -> Result<Vec<Value>> {
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        for args in cmds {
            let mut cmd = redis::Cmd::new();
            for a in args {
                cmd.arg(a);
            }
            pipe.add_command(cmd);
        }
        Ok(match self.conns().await? {
            Conns::Single(slots) => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % slots.slots.len();
                slots
                    .query(i, |mut c| async move { pipe.query_async(&mut c).await })
                    .await?
            }
            Conns::Cluster(c) => pipe.query_async(&mut c.clone()).await?,
        })
    }

    /// A subscription on its own connection (in cluster mode: to the first seed node;
    /// `PUBLISH` reaches every node of a cluster; with Sentinel: to the current master).
    pub async fn subscribe(&self, channels: Vec<String>, patterns: Vec<String>) -> Result<Subscription> {
        let t = timeout(&self.opts);
        let client = self.target()?.client().await?;
        let mut ps = tokio::time::timeout(t, client.get_async_pubsub())
            .await
            .map_err(|_| unreachable_err("Redis", t))??;
        for c in &channels {
            ps.subscribe(c).await?;
        }
        for p in &patterns {
            ps.psubscribe(p).await?;
        }
        Ok(Subscription {
            stream: tokio::sync::Mutex::new(Some(Box::pin(ps.into_on_message()))),
        })
    }
}

fn unreachable_err(what: &str, t: Duration) -> Error {
    Error::Redis {
        message: format!("{what} did not answer within {:.1} s", t.as_secs_f64()),
        unavailable: true,
    }
}

type MsgStream = Pin<Box<dyn Stream<Item = redis::Msg> + Send>>;

/// Messages of a subscription, in order.
pub struct Subscription {
    stream: tokio::sync::Mutex<Option<MsgStream>>,
}

/// One message: channel, the pattern that matched (for `psubscribe`), payload.
#[derive(Debug, Clone)]
pub struct Message {
    pub channel: String,
    pub pattern: Option<String>,
    pub payload: Vec<u8>,
}

impl Subscription {
    /// The next message; `None` once closed or the connection is gone.
    pub async fn next(&self) -> Option<Message> {
        let mut guard = self.stream.lock().await;
        let msg = guard.as_mut()?.next().await?;
        Some(Message {
            channel: msg.get_channel_name().to_owned(),
            pattern: msg.get_pattern::<Option<String>>().ok().flatten(),
            payload: msg.get_payload_bytes().to_vec(),
        })
    }

    /// Unsubscribe and drop the connection.
    pub fn close(&self) {
        if let Ok(mut g) = self.stream.try_lock() {
            g.take();
        }
    }
}
