//! Fault injection and the request log.
//!
//! A [`FaultRule`] matches requests by Kubernetes verb, group, resource,
//! subresource, namespace and name, and applies an action: added latency,
//! an error response (any code; 429 carries `Retry-After`), or dropping the
//! connection without a response. A rule fires a bounded number of times
//! and/or with a probability drawn from a seeded RNG, so runs repeat.
//! Every request is recorded as a [`RequestRecord`] that tests read back
//! (e.g. to check that RBAC grants every call a component makes).

use std::time::Duration;

use serde::Serialize;

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Delay the request, then serve it normally.
    Latency(Duration),
    /// Answer with a `metav1.Status` error of this code.
    Error {
        /// HTTP status code (500, 503, 429 …).
        code: u16,
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
    },
    /// Close the connection without answering.
    Drop,
}

/// A fault injection rule. Unset matchers match anything.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// Kubernetes verb (get, list, watch, create, update, patch, delete, deletecollection).
    pub verb: Option<String>,
    /// API group ("" for core).
    pub group: Option<String>,
    /// Plural resource.
    pub resource: Option<String>,
    /// Subresource ("" for the main resource).
    pub subresource: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Action.
    pub action: FaultAction,
    /// Fire at most this many times.
    pub times: Option<u32>,
    /// Fire with this probability (0.0-1.0).
    pub probability: Option<f64>,
}

impl FaultRule {
    /// A rule with an action that matches every request.
    pub fn new(action: FaultAction) -> Self {
        FaultRule {
            verb: None,
            group: None,
            resource: None,
            subresource: None,
            namespace: None,
            name: None,
            action,
            times: None,
            probability: None,
        }
    }
    /// Answer with an error code.
    pub fn error(code: u16) -> Self {
        Self::new(FaultAction::Error {
            code,
            retry_after: None,
        })
    }
    /// 429 Too Many Requests with `Retry-After`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self::new(FaultAction::Error {
            code: 429,
            retry_after: Some(retry_after_secs),
        })
    }
    /// Added latency.
    pub fn latency(d: Duration) -> Self {
        Self::new(FaultAction::Latency(d))
    }
    /// Drop the connection.
    pub fn drop_connection() -> Self {
        Self::new(FaultAction::Drop)
    }
    /// Match a verb.
    pub fn verb(mut self, v: &str) -> Self {
        self.verb = Some(v.into());
        self
    }
    /// Match a group.
    pub fn group(mut self, g: &str) -> Self {
        self.group = Some(g.into());
        self
    }
    /// Match a resource (plural).
    pub fn resource(mut self, r: &str) -> Self {
        self.resource = Some(r.into());
        self
    }
    /// Match a subresource.
    pub fn subresource(mut self, s: &str) -> Self {
        self.subresource = Some(s.into());
        self
    }
    /// Match a namespace.
    pub fn namespace(mut self, n: &str) -> Self {
        self.namespace = Some(n.into());
        self
    }
    /// Match a name.
    pub fn name(mut self, n: &str) -> Self {
        self.name = Some(n.into());
        self
    }
    /// Fire at most `n` times.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
    /// Fire with probability `p`.
    pub fn probability(mut self, p: f64) -> Self {
        self.probability = Some(p.clamp(0.0, 1.0));
        self
    }

    fn matches(&self, r: &RequestRecord) -> bool {
        let m = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        m(&self.verb, &r.verb)
            && m(&self.group, &r.group)
            && m(&self.resource, &r.resource)
            && m(&self.subresource, &r.subresource)
            && m(&self.namespace, &r.namespace)
            && m(&self.name, &r.name)
    }
}

/// One served request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// Kubernetes verb, or the lower-case HTTP method for non-resource paths.
    pub verb: String,
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural resource ("" for non-resource paths).
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Namespace.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// The request path.
    pub path: String,
    /// User-Agent header.
    pub user_agent: String,
    /// Response status (0 when the connection was dropped).
    pub status: u16,
}

/// Installed rules with their remaining counts and the seeded RNG.
#[derive(Debug)]
pub struct Faults {
    rules: Vec<(u64, FaultRule, Option<u32>)>,
    next_id: u64,
    rng: fastrand::Rng,
}

/// Handle of an installed rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultId(pub u64);

impl Faults {
    /// No rules; the RNG seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Faults {
            rules: Vec::new(),
            next_id: 1,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Installs a rule.
    pub fn add(&mut self, rule: FaultRule) -> FaultId {
        let id = self.next_id;
        self.next_id += 1;
        let left = rule.times;
        self.rules.push((id, rule, left));
        FaultId(id)
    }

    /// Removes a rule.
    pub fn remove(&mut self, id: FaultId) {
        self.rules.retain(|(i, _, _)| *i != id.0);
    }

    /// Removes all rules.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The actions to apply to a request: all latencies, then at most one
    /// error or drop.
    pub fn decide(&mut self, r: &RequestRecord) -> Vec<FaultAction> {
        let mut out = Vec::new();
        let mut terminal = false;
        for (_, rule, left) in &mut self.rules {
            if !rule.matches(r) || *left == Some(0) {
                continue;
            }
            let is_terminal = !matches!(rule.action, FaultAction::Latency(_));
            if is_terminal && terminal {
                continue;
            }
            if let Some(p) = rule.probability
                && self.rng.f64() >= p
            {
                continue;
            }
            if let Some(n) = left.as_mut() {
                *n -= 1;
            }
            terminal |= is_terminal;
            out.push(rule.action.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_count_and_sample() {
        let mut f = Faults::new(7);
        f.add(
            FaultRule::error(503)
                .verb("list")
                .resource("configmaps")
                .times(2),
        );
        let list = RequestRecord {
            verb: "list".into(),
            resource: "configmaps".into(),
            ..Default::default()
        };
        let get = RequestRecord {
            verb: "get".into(),
            ..list.clone()
        };
        assert_eq!(f.decide(&get), vec![]);
        assert_eq!(f.decide(&list).len(), 1);
        assert_eq!(f.decide(&list).len(), 1);
        assert_eq!(f.decide(&list), vec![]);
        f.clear();
        f.add(FaultRule::drop_connection().probability(0.5));
        let hits = (0..1000).filter(|_| !f.decide(&get).is_empty()).count();
        assert!((400..600).contains(&hits), "{hits}");
    }
}
