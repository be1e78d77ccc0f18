//! `/metrics` in Prometheus text: requests by route and status, bytes sent, requests in
//! flight, upstream bytes and 429s, result cache hits and misses, coalesced requests.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// A request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    /// `squash`, `flatten`, `files`, `diff`, `waste`, `healthz`, `metrics`, `other`.
    pub route: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// Every metric of the service.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route and status.
    pub requests: Family<RouteStatus, Counter>,
    /// Body bytes sent to clients.
    pub bytes_sent: Counter,
    /// Requests being answered now (a body being streamed counts until its end).
    pub in_flight: Gauge,
    /// Blob bytes read from the registry.
    pub upstream_bytes: Counter,
    /// Blob bytes pushed to the registry (`--publish`).
    pub upstream_sent_bytes: Counter,
    /// 429 answers from the registry.
    pub upstream_429: Counter,
    /// Results served from disk.
    pub cache_hits: Counter,
    /// Results computed.
    pub cache_misses: Counter,
    /// Requests that waited for an identical one's computation.
    pub coalesced: Counter,
    /// Squash results pushed to the registry (`--publish`).
    pub published: Counter,
    /// Squash results copied from the registry instead of computed (`--publish`).
    pub published_hits: Counter,
}

impl Metrics {
    /// The metrics, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strata");
        let m = Metrics {
            requests: Family::default(),
            bytes_sent: Counter::default(),
            in_flight: Gauge::default(),
            upstream_bytes: Counter::default(),
            upstream_sent_bytes: Counter::default(),
            upstream_429: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            coalesced: Counter::default(),
            published: Counter::default(),
            published_hits: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "Requests answered", m.requests.clone());
        registry.register("sent_bytes", "Body bytes sent", m.bytes_sent.clone());
        registry.register("in_flight", "Requests being answered", m.in_flight.clone());
        registry.register(
            "upstream_bytes",
            "Blob bytes read from the registry",
            m.upstream_bytes.clone(),
        );
        registry.register(
            "upstream_sent_bytes",
            "Blob bytes pushed to the registry",
            m.upstream_sent_bytes.clone(),
        );
        registry.register(
            "upstream_429",
            "429 answers from the registry",
            m.upstream_429.clone(),
        );
        registry.register(
            "cache_hits",
            "Results served from disk",
            m.cache_hits.clone(),
        );
        registry.register("cache_misses", "Results computed", m.cache_misses.clone());
        registry.register(
            "coalesced",
            "Requests that shared a computation",
            m.coalesced.clone(),
        );
        registry.register(
            "published",
            "Squash results pushed to the registry",
            m.published.clone(),
        );
        registry.register(
            "published_hits",
            "Squash results copied from the registry",
            m.published_hits.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Count `g` (the computations running) in the exposition as `computations`.
    pub fn register_running(&mut self, g: Gauge) {
        self.registry
            .register("computations", "Computations running now", g);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counts what the registry client moves, for the metrics.
pub struct Upstream(pub Arc<Metrics>);

struct Count(Counter);

impl strata::registry::Transfer for Count {
    fn advance(&mut self, bytes: u64) {
        self.0.inc_by(bytes);
    }
}

impl strata::registry::Transfers for Upstream {
    fn start(
        &self,
        direction: strata::registry::Direction,
        _label: String,
        _total: Option<u64>,
    ) -> Box<dyn strata::registry::Transfer> {
        Box::new(Count(match direction {
            strata::registry::Direction::Download => self.0.upstream_bytes.clone(),
            strata::registry::Direction::Upload => self.0.upstream_sent_bytes.clone(),
        }))
    }

    fn answered(&self, status: u16) {
        if status == 429 {
            self.0.upstream_429.inc();
        }
    }
}
