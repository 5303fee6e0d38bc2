//! The upstream engines: least-outstanding choice among the healthy ones that serve the
//! requested model, passive health from failed attempts, and an active probe of `/v1/models`
//! (which also learns the models each upstream serves).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::{Role, Routing, UpstreamConfig};

/// KV cache usage from which kv-cache routing avoids an upstream (vLLM preempts when its cache
/// runs out; past 90 % a burst of long prompts gets there).
const KV_NEARLY_FULL: f64 = 0.9;

/// One upstream engine and what the gateway knows of it.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub role: Role,
    /// `http://host:port` or `https://host[:port]`, no trailing slash.
    pub base: String,
    /// `http` or `https` (`url.scheme` on attempt spans).
    pub scheme: &'static str,
    /// The URL's host and port (`server.address`, `server.port`; the scheme's default port
    /// when the URL has none).
    pub host: String,
    pub port: u16,
    outstanding: AtomicUsize,
    healthy: AtomicBool,
    failures: AtomicU32,
    /// KV cache usage (0–1) from the last probe of `/metrics`, as `f64` bits; NaN: unknown.
    kv_usage: AtomicU64,
    /// Model ids from the last successful probe; empty until then (then any model is tried).
    models: RwLock<HashSet<String>>,
}

impl Upstream {
    fn new(config: &UpstreamConfig) -> Self {
        let base = config.url.trim_end_matches('/').to_owned();
        let uri = base.parse::<http::Uri>().ok();
        let https = uri.as_ref().and_then(|u| u.scheme()) == Some(&http::uri::Scheme::HTTPS);
        let host = uri.as_ref().and_then(|u| u.host()).unwrap_or_default();
        Self {
            name: config.name.clone(),
            role: config.role,
            scheme: if https { "https" } else { "http" },
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri
                .as_ref()
                .and_then(|u| u.port_u16())
                .unwrap_or(if https { 443 } else { 80 }),
            base,
            outstanding: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            kv_usage: AtomicU64::new(f64::NAN.to_bits()),
            models: RwLock::new(HashSet::new()),
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// KV cache usage (0–1) from the last `/metrics` probe, if known.
    pub fn kv_usage(&self) -> Option<f64> {
        let v = f64::from_bits(self.kv_usage.load(Ordering::Relaxed));
        (!v.is_nan()).then_some(v)
    }

    pub(crate) fn set_kv_usage(&self, usage: Option<f64>) {
        let v = usage.unwrap_or(f64::NAN);
        self.kv_usage.store(v.to_bits(), Ordering::Relaxed);
    }

    fn serves(&self, model: &str) -> bool {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        models.is_empty() || models.contains(model)
    }

    /// The models the last probe found.
    pub fn models(&self) -> Vec<String> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<String> = models.iter().cloned().collect();
        list.sort();
        list
    }

    /// Counts a request in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// An attempt succeeded (the upstream answered without a 5xx).
    pub fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.healthy.store(true, Ordering::Relaxed);
    }

    /// An attempt failed (connection, timeout, 5xx); `unhealthy_after` in a row takes the
    /// upstream out of rotation until a probe succeeds.
    pub fn failed(&self, unhealthy_after: u32) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= unhealthy_after && self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(upstream = %self.name, failures = n, "upstream marked unhealthy");
        }
    }

    fn probed(&self, models: Option<HashSet<String>>) {
        match models {
            Some(models) => {
                *self.models.write().unwrap_or_else(|e| e.into_inner()) = models;
                self.failures.store(0, Ordering::Relaxed);
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(upstream = %self.name, "upstream healthy again (probe)");
                }
            }
            None => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(upstream = %self.name, "upstream probe failed: marked unhealthy");
                }
            }
        }
    }
}

/// A request in flight to an upstream.
#[derive(Debug)]
pub struct InFlight(Arc<Upstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All upstreams.
#[derive(Debug, Clone)]
pub struct Upstreams {
    list: Arc<Vec<Arc<Upstream>>>,
    routing: Routing,
    /// Rotates the choice among equally loaded upstreams (at low load all have 0 outstanding).
    turn: Arc<AtomicUsize>,
}

impl Upstreams {
    pub fn new(configs: &[UpstreamConfig]) -> Self {
        Self {
            list: Arc::new(configs.iter().map(|c| Arc::new(Upstream::new(c))).collect()),
            routing: Routing::default(),
            turn: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The same upstreams, chosen by `routing`.
    pub fn with_routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.list
    }

    /// Whether requests go prefill worker → decode worker (both kinds are configured).
    pub fn disaggregated(&self) -> bool {
        self.list.iter().any(|u| u.role == Role::Prefill)
    }

    /// The upstream in `role` for a request for `model`: the least outstanding among the
    /// healthy ones that serve it and were not `tried` (ties taken in turn); if none is healthy,
    /// the least outstanding of the rest (a probe may lag behind a recovery; trying beats
    /// refusing).
    pub fn pick(&self, model: &str, tried: &[usize], role: Role) -> Option<(usize, Arc<Upstream>)> {
        let candidates: Vec<(usize, &Arc<Upstream>)> = self
            .list
            .iter()
            .enumerate()
            .filter(|(i, u)| u.role == role && !tried.contains(i) && u.serves(model))
            .collect();
        let healthy: Vec<(usize, &Arc<Upstream>)> = candidates
            .iter()
            .copied()
            .filter(|(_, u)| u.is_healthy())
            .collect();
        let pool = if healthy.is_empty() {
            candidates
        } else {
            healthy
        };
        // One reading of each upstream's load and KV usage: other requests change them
        // meanwhile, and the choice must be made on one consistent view.
        let mut pool: Vec<(usize, &Arc<Upstream>, usize, f64)> = pool
            .into_iter()
            .map(|(i, u)| (i, u, u.outstanding(), u.kv_usage().unwrap_or(0.0)))
            .collect();
        if self.routing == Routing::KvCache {
            if pool.iter().any(|p| p.3 < KV_NEARLY_FULL) {
                pool.retain(|p| p.3 < KV_NEARLY_FULL);
            } else {
                // All nearly full: the emptiest cache.
                let emptiest = pool.iter().map(|p| p.3).fold(f64::INFINITY, f64::min);
                pool.retain(|p| p.3 <= emptiest);
            }
        }
        let least = pool.iter().map(|p| p.2).min()?;
        pool.retain(|p| p.2 == least);
        let (i, u, _, _) = pool[self.turn.fetch_add(1, Ordering::Relaxed) % pool.len()];
        Some((i, Arc::clone(u)))
    }

    /// Probes every upstream's `/v1/models` every `interval` until the returned task is
    /// aborted (or the runtime stops).
    pub fn spawn_probe(
        &self,
        client: crate::client::UpstreamClient,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let upstreams = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for u in upstreams.all() {
                    let models = client.models(&u.base).await;
                    u.probed(models);
                    if upstreams.routing == Routing::KvCache {
                        u.set_kv_usage(client.kv_usage(&u.base).await);
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Upstreams {
        let configs: Vec<UpstreamConfig> = (0..n)
            .map(|i| UpstreamConfig {
                name: format!("u{i}"),
                url: format!("http://127.0.0.1:{}", 9000 + i),
                role: crate::config::Role::Both,
                ..Default::default()
            })
            .collect();
        Upstreams::new(&configs)
    }

    #[test]
    fn least_outstanding_wins_and_ties_are_taken_in_turn() {
        let p = pool(3);
        let picks: Vec<usize> = (0..6)
            .map(|_| p.pick("m", &[], Role::Both).unwrap().0)
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2], "idle upstreams share the load");
        let _a = p.all()[0].begin();
        let _b = p.all()[1].begin();
        assert_eq!(p.pick("m", &[], Role::Both).unwrap().0, 2);
        let _c = p.all()[2].begin();
        let _d = p.all()[2].begin();
        let next = p.pick("m", &[], Role::Both).unwrap().0;
        assert!(next == 0 || next == 1, "2 is the busiest: {next}");
        assert_eq!(
            p.pick("m", &[0], Role::Both).unwrap().0,
            1,
            "tried upstreams are skipped"
        );
        drop(_a);
        assert_eq!(p.all()[0].outstanding(), 0, "the guard counts down");
    }

    #[test]
    fn unhealthy_upstreams_are_avoided_until_nothing_else_is_left() {
        let p = pool(2);
        p.all()[0].failed(2);
        assert!(p.all()[0].is_healthy(), "one failure is not enough");
        p.all()[0].failed(2);
        assert!(!p.all()[0].is_healthy());
        let _busy = p.all()[1].begin();
        assert_eq!(
            p.pick("m", &[], Role::Both).unwrap().0,
            1,
            "busier but healthy"
        );
        assert_eq!(
            p.pick("m", &[1], Role::Both).unwrap().0,
            0,
            "unhealthy beats nothing"
        );
        assert!(p.pick("m", &[0, 1], Role::Both).is_none());
        p.all()[0].probed(Some(HashSet::from(["m".to_owned()])));
        assert!(p.all()[0].is_healthy(), "a good probe restores it");
    }

    #[test]
    fn models_learnt_by_the_probe_steer_requests() {
        let p = pool(2);
        p.all()[0].probed(Some(HashSet::from(["a".to_owned()])));
        p.all()[1].probed(Some(HashSet::from(["b".to_owned()])));
        let _busy = p.all()[1].begin();
        assert_eq!(p.pick("b", &[], Role::Both).unwrap().0, 1);
        assert_eq!(p.pick("a", &[], Role::Both).unwrap().0, 0);
        assert!(p.pick("c", &[], Role::Both).is_none(), "nobody serves c");
    }

    #[test]
    fn kv_cache_routing_avoids_nearly_full_caches() {
        let p = pool(3).with_routing(Routing::KvCache);
        p.all()[0].set_kv_usage(Some(0.95));
        p.all()[1].set_kv_usage(Some(0.5));
        let _busy = p.all()[1].begin();
        // u2's usage is unknown (not probed yet): it counts as room.
        let picks: Vec<usize> = (0..4)
            .map(|_| p.pick("m", &[], Role::Both).unwrap().0)
            .collect();
        assert_eq!(
            picks,
            [2, 2, 2, 2],
            "least outstanding among those with room"
        );
        p.all()[1].set_kv_usage(Some(0.97));
        p.all()[2].set_kv_usage(Some(0.92));
        assert_eq!(
            p.pick("m", &[], Role::Both).unwrap().0,
            2,
            "all nearly full: the emptiest"
        );
        let plain = pool(2);
        plain.all()[0].set_kv_usage(Some(0.99));
        let first = plain.pick("m", &[], Role::Both).unwrap().0;
        assert_eq!(first, 0, "ignored unless asked for");
    }

    /// Loads change while a choice is made: the choice must still be one (a race here once
    /// divided by zero, found by the benchmark at 16 streams).
    #[test]
    fn picking_while_loads_change_always_finds_an_upstream() {
        // One upstream: any change between reading its load and choosing used to leave nothing.
        let p = pool(1);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..200_000 {
                        let _busy = p.all()[0].begin();
                    }
                });
            }
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..200_000 {
                        assert!(p.pick("m", &[], Role::Both).is_some());
                    }
                });
            }
        });
    }
}
