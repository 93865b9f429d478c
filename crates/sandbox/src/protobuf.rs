//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded
//! into the JSON object kube-apiserver would have seen had the client sent
//! JSON. kubectl's typed clients (`create namespace|deployment|secret|…`,
//! `run`, `expose`) send built-in kinds this way.
//!
//! ```text
//! body = "k8s\0" ++ runtime.Unknown{typeMeta{apiVersion, kind}, raw}
//! raw  ─▶ message of (group, version, kind) ─▶ fields by number (schema)
//!      ─▶ JSON: camelCase names, Time → RFC 3339, IntOrString → number or
//!         string, Quantity → string, bytes → base64, inline structs merged,
//!         zero scalars of non-pointer Go fields left out (Go's `omitempty`)
//! ```
//!
//! The field numbers, names and types come from [`crate::protobuf_schema`],
//! generated from the Kubernetes 1.33 `generated.proto` files that k8s-pb
//! 0.8.0 packages (see `tools/gen_protobuf_schema.py`), so no protobuf
//! runtime or code generator is linked: the wire format is decoded directly
//! against that table.
//!
//! Go's protobuf marshallers write value fields even when they hold the
//! zero value and pointer fields only when set; Go's JSON encoder leaves
//! out zero values of `omitempty` fields. So a zero scalar on the wire is
//! kept only for the pointer fields in [`POINTER_FIELDS`] (where `0` or
//! `false` is a choice: `replicas: 0`, `privileged: false`) and for the
//! few required fields without `omitempty`.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::protobuf_schema::MESSAGES;

/// A message field: number, JSON name ("" for an inlined embedded struct),
/// type, repeated.
#[derive(Debug)]
pub struct Field(pub u32, pub &'static str, pub Ty, pub bool);

/// A field's type.
#[derive(Debug)]
pub enum Ty {
    /// `string`.
    Str,
    /// `bytes` (JSON: base64).
    Bytes,
    /// `int32`.
    I32,
    /// `int64`.
    I64,
    /// `bool`.
    Bool,
    /// `double`.
    F64,
    /// A message, by full name.
    Msg(&'static str),
    /// `map<string, V>`.
    Map(&'static Ty),
}

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// Pointer fields (`*int32`, `*bool`, `*string` in the Go types) whose zero
/// value is meaningful and therefore kept. Sorted.
const POINTER_FIELDS: &[&str] = &[
    "api.apps.v1.DaemonSetSpec.revisionHistoryLimit",
    "api.apps.v1.DeploymentSpec.progressDeadlineSeconds",
    "api.apps.v1.DeploymentSpec.replicas",
    "api.apps.v1.DeploymentSpec.revisionHistoryLimit",
    "api.apps.v1.ReplicaSetSpec.replicas",
    "api.apps.v1.RollingUpdateStatefulSetStrategy.partition",
    "api.apps.v1.StatefulSetSpec.replicas",
    "api.apps.v1.StatefulSetSpec.revisionHistoryLimit",
    "api.autoscaling.v1.HorizontalPodAutoscalerSpec.minReplicas",
    "api.autoscaling.v1.HorizontalPodAutoscalerSpec.targetCPUUtilizationPercentage",
    "api.autoscaling.v1.ScaleStatus.replicas",
    "api.autoscaling.v2.HPAScalingRules.stabilizationWindowSeconds",
    "api.autoscaling.v2.HorizontalPodAutoscalerSpec.minReplicas",
    "api.batch.v1.CronJobSpec.failedJobsHistoryLimit",
    "api.batch.v1.CronJobSpec.startingDeadlineSeconds",
    "api.batch.v1.CronJobSpec.successfulJobsHistoryLimit",
    "api.batch.v1.CronJobSpec.suspend",
    "api.batch.v1.CronJobSpec.timeZone",
    "api.batch.v1.JobSpec.activeDeadlineSeconds",
    "api.batch.v1.JobSpec.backoffLimit",
    "api.batch.v1.JobSpec.backoffLimitPerIndex",
    "api.batch.v1.JobSpec.completions",
    "api.batch.v1.JobSpec.manualSelector",
    "api.batch.v1.JobSpec.maxFailedIndexes",
    "api.batch.v1.JobSpec.parallelism",
    "api.batch.v1.JobSpec.suspend",
    "api.batch.v1.JobSpec.ttlSecondsAfterFinished",
    "api.core.v1.CSIVolumeSource.readOnly",
    "api.core.v1.ClientIPConfig.timeoutSeconds",
    "api.core.v1.ConfigMap.immutable",
    "api.core.v1.ConfigMapEnvSource.optional",
    "api.core.v1.ConfigMapKeySelector.optional",
    "api.core.v1.ConfigMapProjection.optional",
    "api.core.v1.ConfigMapVolumeSource.defaultMode",
    "api.core.v1.ConfigMapVolumeSource.optional",
    "api.core.v1.DownwardAPIVolumeFile.mode",
    "api.core.v1.DownwardAPIVolumeSource.defaultMode",
    "api.core.v1.KeyToPath.mode",
    "api.core.v1.PersistentVolumeClaimSpec.storageClassName",
    "api.core.v1.PodSecurityContext.fsGroup",
    "api.core.v1.PodSecurityContext.runAsGroup",
    "api.core.v1.PodSecurityContext.runAsNonRoot",
    "api.core.v1.PodSecurityContext.runAsUser",
    "api.core.v1.PodSpec.activeDeadlineSeconds",
    "api.core.v1.PodSpec.automountServiceAccountToken",
    "api.core.v1.PodSpec.enableServiceLinks",
    "api.core.v1.PodSpec.hostUsers",
    "api.core.v1.PodSpec.priority",
    "api.core.v1.PodSpec.setHostnameAsFQDN",
    "api.core.v1.PodSpec.shareProcessNamespace",
    "api.core.v1.PodSpec.terminationGracePeriodSeconds",
    "api.core.v1.Probe.terminationGracePeriodSeconds",
    "api.core.v1.ProjectedVolumeSource.defaultMode",
    "api.core.v1.Secret.immutable",
    "api.core.v1.SecretEnvSource.optional",
    "api.core.v1.SecretKeySelector.optional",
    "api.core.v1.SecretProjection.optional",
    "api.core.v1.SecretVolumeSource.defaultMode",
    "api.core.v1.SecretVolumeSource.optional",
    "api.core.v1.SecurityContext.allowPrivilegeEscalation",
    "api.core.v1.SecurityContext.privileged",
    "api.core.v1.SecurityContext.readOnlyRootFilesystem",
    "api.core.v1.SecurityContext.runAsGroup",
    "api.core.v1.SecurityContext.runAsNonRoot",
    "api.core.v1.SecurityContext.runAsUser",
    "api.core.v1.ServiceAccount.automountServiceAccountToken",
    "api.core.v1.ServiceSpec.allocateLoadBalancerNodePorts",
    "api.core.v1.Toleration.tolerationSeconds",
    "api.core.v1.TopologySpreadConstraint.minDomains",
    "api.networking.v1.NetworkPolicyPort.endPort",
    "api.scheduling.v1.PriorityClass.value",
    "apimachinery.pkg.apis.meta.v1.DeleteOptions.gracePeriodSeconds",
    "apimachinery.pkg.apis.meta.v1.DeleteOptions.orphanDependents",
    "apimachinery.pkg.apis.meta.v1.ObjectMeta.deletionGracePeriodSeconds",
    "apimachinery.pkg.apis.meta.v1.OwnerReference.blockOwnerDeletion",
    "apimachinery.pkg.apis.meta.v1.OwnerReference.controller",
];

/// Whether a request's content type is protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

/// Decodes a protobuf request body into the object's JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    decode_envelope(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding protobuf request body: {e}")))
}

fn decode_envelope(body: &[u8]) -> Result<Value, String> {
    let raw = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the Kubernetes protobuf prefix")?;
    let (mut api_version, mut kind, mut inner, mut encoding) =
        (String::new(), String::new(), &[][..], String::new());
    let mut r = Reader::new(raw);
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, 2) => {
                let mut t = Reader::new(r.bytes()?);
                while let Some((tag, wire)) = t.key()? {
                    match (tag, wire) {
                        (1, 2) => api_version = t.string()?,
                        (2, 2) => kind = t.string()?,
                        _ => t.skip(wire)?,
                    }
                }
            }
            (2, 2) => inner = r.bytes()?,
            (3, 2) => encoding = r.string()?,
            _ => r.skip(wire)?,
        }
    }
    if !encoding.is_empty() {
        return Err(format!("content encoding {encoding:?} is not supported"));
    }
    if kind.is_empty() {
        return Err("the envelope names no kind".into());
    }
    let message = message_name(&api_version, &kind);
    if lookup(&message).is_none() {
        return Err(format!(
            "no protobuf message is known for {api_version} {kind}; send JSON instead"
        ));
    }
    let mut v = decode_message(&message, inner)?;
    if let Some(o) = v.as_object_mut() {
        // The JSON form starts with the type; keep that order for readers.
        let mut out = Map::new();
        out.insert("kind".into(), json!(kind));
        out.insert("apiVersion".into(), json!(api_version));
        out.append(o);
        v = Value::Object(out);
    }
    Ok(v)
}

/// The protobuf message of a kind: `apps/v1 Deployment` → `api.apps.v1.Deployment`.
fn message_name(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if matches!(
        kind,
        "DeleteOptions" | "CreateOptions" | "UpdateOptions" | "PatchOptions"
    ) {
        return format!("apimachinery.pkg.apis.meta.v1.{kind}");
    }
    let package = match group {
        "" => "api.core".to_string(),
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions".to_string(),
        "apiregistration.k8s.io" => "kube_aggregator.pkg.apis.apiregistration".to_string(),
        "meta.k8s.io" => "apimachinery.pkg.apis.meta".to_string(),
        g => format!("api.{}", g.split('.').next().unwrap_or(g)),
    };
    format!("{package}.{version}.{kind}")
}

fn lookup(message: &str) -> Option<&'static [Field]> {
    MESSAGES
        .binary_search_by(|(name, _)| (*name).cmp(message))
        .ok()
        .map(|i| MESSAGES[i].1)
}

fn is_pointer(message: &str, field: &str) -> bool {
    let full = format!("{message}.{field}");
    POINTER_FIELDS.binary_search(&full.as_str()).is_ok()
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn key(&mut self) -> Result<Option<(u32, u8)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let k = self.varint()?;
        let tag = u32::try_from(k >> 3).map_err(|_| "field number out of range")?;
        Ok(Some((tag, (k & 7) as u8)))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or("truncated field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }
    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

/// A scalar of a known type from the wire.
fn scalar(r: &mut Reader, ty: &Ty, wire: u8) -> Result<Value, String> {
    Ok(match (ty, wire) {
        (Ty::Str, 2) => json!(r.string()?),
        (Ty::Bytes, 2) => json!(base64::engine::general_purpose::STANDARD.encode(r.bytes()?)),
        // Negative int32s are sign-extended to 64 bits on the wire.
        (Ty::I32, 0) => json!(r.varint()? as i64 as i32),
        (Ty::I64, 0) => json!(r.varint()? as i64),
        (Ty::Bool, 0) => json!(r.varint()? != 0),
        (Ty::F64, 1) => {
            let b: [u8; 8] = r.take(8)?.try_into().map_err(|_| "truncated double")?;
            json!(f64::from_le_bytes(b))
        }
        (t, w) => return Err(format!("wire type {w} does not fit {t:?}")),
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn value_of(ty: &Ty, r: &mut Reader, wire: u8) -> Result<Value, String> {
    match ty {
        Ty::Msg(m) => {
            if wire != 2 {
                return Err(format!("wire type {wire} does not fit message {m}"));
            }
            decode_message(m, r.bytes()?)
        }
        Ty::Map(_) => Err("a map cannot be a value".into()),
        t => scalar(r, t, wire),
    }
}

/// Decodes one message into its JSON form.
fn decode_message(message: &str, buf: &[u8]) -> Result<Value, String> {
    if let Some(v) = special(message, buf)? {
        return Ok(v);
    }
    let fields = lookup(message).ok_or_else(|| format!("unknown message {message}"))?;
    let mut out = Map::new();
    let mut r = Reader::new(buf);
    while let Some((tag, wire)) = r.key()? {
        let Some(f) = fields.iter().find(|f| f.0 == tag) else {
            r.skip(wire)?;
            continue;
        };
        let Field(_, name, ty, repeated) = f;
        match ty {
            Ty::Map(vt) => {
                let mut e = Reader::new(r.bytes()?);
                let (mut k, mut val) = (String::new(), None);
                while let Some((tag, wire)) = e.key()? {
                    match tag {
                        1 => k = e.string()?,
                        2 => val = Some(value_of(vt, &mut e, wire)?),
                        _ => e.skip(wire)?,
                    }
                }
                let val = val.unwrap_or_else(|| match vt {
                    Ty::Str | Ty::Bytes => json!(""),
                    _ => Value::Null,
                });
                let m = out.entry(*name).or_insert_with(|| json!({}));
                if let Some(m) = m.as_object_mut() {
                    m.insert(k, val);
                }
            }
            _ if *repeated => {
                let arr = out.entry(*name).or_insert_with(|| json!([]));
                let items = match (ty, wire) {
                    // Packed numbers.
                    (Ty::I32 | Ty::I64 | Ty::Bool | Ty::F64, 2) => {
                        let mut p = Reader::new(r.bytes()?);
                        let w = if matches!(ty, Ty::F64) { 1 } else { 0 };
                        let mut v = Vec::new();
                        while p.pos < p.buf.len() {
                            v.push(scalar(&mut p, ty, w)?);
                        }
                        v
                    }
                    _ => vec![value_of(ty, &mut r, wire)?],
                };
                if let Some(a) = arr.as_array_mut() {
                    a.extend(items);
                }
            }
            Ty::Msg(_) if name.is_empty() => {
                // An embedded Go struct: its fields are the parent's in JSON.
                if let Value::Object(mut o) = value_of(ty, &mut r, wire)? {
                    out.append(&mut o);
                }
            }
            _ => {
                let v = value_of(ty, &mut r, wire)?;
                let omit = match ty {
                    Ty::Msg(_) => v.is_null(),
                    _ => is_zero(&v) && !is_pointer(message, name),
                };
                if omit {
                    out.remove(*name);
                } else {
                    out.insert((*name).to_string(), v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Messages whose JSON form is not an object of their fields.
fn special(message: &str, buf: &[u8]) -> Result<Option<Value>, String> {
    let short = message.rsplit('.').next().unwrap_or(message);
    let package = &message[..message.len() - short.len()];
    let fields = |buf: &[u8]| -> Result<Vec<(u32, Value)>, String> {
        // Every special message has scalar fields only.
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while let Some((tag, wire)) = r.key()? {
            let v = match wire {
                0 => json!(r.varint()? as i64),
                2 => Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes()?)),
                w => {
                    r.skip(w)?;
                    continue;
                }
            };
            out.push((tag, v));
        }
        Ok(out)
    };
    let raw = |v: &Value| -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())
    };
    let get =
        |f: &[(u32, Value)], tag: u32| f.iter().rev().find(|(t, _)| *t == tag).map(|x| x.1.clone());
    let v = match (package, short) {
        ("apimachinery.pkg.apis.meta.v1.", "Time" | "MicroTime") => {
            let f = fields(buf)?;
            let secs = get(&f, 1).and_then(|v| v.as_i64()).unwrap_or(0);
            let nanos = get(&f, 2).and_then(|v| v.as_i64()).unwrap_or(0);
            if buf.is_empty() || (secs == 0 && nanos == 0) {
                Value::Null
            } else {
                let t = jiff::Timestamp::new(secs, i32::try_from(nanos).unwrap_or(0))
                    .map_err(|e| format!("invalid time: {e}"))?;
                let fmt = if short == "Time" {
                    "%Y-%m-%dT%H:%M:%SZ"
                } else {
                    "%Y-%m-%dT%H:%M:%S%.6fZ"
                };
                json!(t.strftime(fmt).to_string())
            }
        }
        ("apimachinery.pkg.apis.meta.v1.", "Duration") => {
            let f = fields(buf)?;
            json!(go_duration(
                get(&f, 1).and_then(|v| v.as_i64()).unwrap_or(0)
            ))
        }
        ("apimachinery.pkg.util.intstr.", "IntOrString") => {
            let mut r = Reader::new(buf);
            let (mut kind, mut int, mut string) = (0, 0i32, String::new());
            while let Some((tag, wire)) = r.key()? {
                match (tag, wire) {
                    (1, 0) => kind = r.varint()?,
                    (2, 0) => int = r.varint()? as i64 as i32,
                    (3, 2) => string = r.string()?,
                    _ => r.skip(wire)?,
                }
            }
            if kind == 1 { json!(string) } else { json!(int) }
        }
        ("apimachinery.pkg.api.resource.", "Quantity") => {
            let mut r = Reader::new(buf);
            let mut s = String::new();
            while let Some((tag, wire)) = r.key()? {
                match (tag, wire) {
                    (1, 2) => s = r.string()?,
                    _ => r.skip(wire)?,
                }
            }
            json!(s)
        }
        ("apimachinery.pkg.runtime.", "RawExtension")
        | ("apimachinery.pkg.apis.meta.v1.", "FieldsV1")
        | ("apiextensions_apiserver.pkg.apis.apiextensions.v1.", "JSON") => {
            let f = fields(buf)?;
            match get(&f, 1) {
                None => Value::Null,
                Some(b) => {
                    let bytes = raw(&b)?;
                    serde_json::from_slice(&bytes)
                        .map_err(|_| format!("{short} does not hold JSON"))?
                }
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// Go's `time.Duration.String()` for whole nanoseconds (`1h0m0s`, `1.5s`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        return match n {
            n if n < 1_000 => format!("{sign}{n}ns"),
            n if n < 1_000_000 => format!("{sign}{}µs", trim(n as f64 / 1e3)),
            n => format!("{sign}{}ms", trim(n as f64 / 1e6)),
        };
    }
    let secs = n / 1_000_000_000;
    let frac = n % 1_000_000_000;
    let s = secs % 60;
    let s = if frac == 0 {
        format!("{s}s")
    } else {
        format!("{}s", trim(s as f64 + frac as f64 / 1e9))
    };
    match secs / 60 {
        0 => format!("{sign}{s}"),
        m if m < 60 => format!("{sign}{m}m{s}"),
        m => format!("{sign}{}h{}m{s}", m / 60, m % 60),
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal protobuf writer for the tests.
    #[derive(Default)]
    struct W(Vec<u8>);
    impl W {
        fn varint(&mut self, mut v: u64) -> &mut Self {
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.0.push(b);
                    return self;
                }
                self.0.push(b | 0x80);
            }
        }
        fn int(&mut self, tag: u64, v: i64) -> &mut Self {
            self.varint(tag << 3).varint(v as u64)
        }
        fn bytes(&mut self, tag: u64, b: &[u8]) -> &mut Self {
            self.varint(tag << 3 | 2).varint(b.len() as u64);
            self.0.extend_from_slice(b);
            self
        }
        fn str(&mut self, tag: u64, s: &str) -> &mut Self {
            self.bytes(tag, s.as_bytes())
        }
        fn msg(&mut self, tag: u64, f: impl FnOnce(&mut W)) -> &mut Self {
            let mut w = W::default();
            f(&mut w);
            self.bytes(tag, &w.0)
        }
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut w = W::default();
        w.msg(1, |t| {
            t.str(1, api_version).str(2, kind);
        })
        .bytes(2, raw)
        .str(3, "")
        .str(4, "");
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&w.0);
        out
    }

    #[test]
    fn the_schema_is_sorted_for_binary_search() {
        assert!(MESSAGES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(POINTER_FIELDS.windows(2).all(|w| w[0] < w[1]));
        for p in POINTER_FIELDS {
            let (m, f) = p.rsplit_once('.').expect("message.field");
            let fields = lookup(m).unwrap_or_else(|| panic!("{m} is in the schema"));
            assert!(fields.iter().any(|x| x.1 == f), "{p} is a field");
        }
    }

    #[test]
    fn a_deployment_decodes_to_its_json_form() {
        // As kubectl 1.32 `create deployment web --image=nginx --replicas=0`
        // writes it: value fields always, zero pointers when set.
        let mut w = W::default();
        w.msg(1, |m| {
            m.str(1, "web")
                .str(2, "")
                .str(3, "")
                .int(7, 0)
                .msg(8, |_| {});
            m.msg(11, |e| {
                e.str(1, "app").str(2, "web");
            });
        })
        .msg(2, |s| {
            s.int(1, 0);
            s.msg(2, |sel| {
                sel.msg(1, |e| {
                    e.str(1, "app").str(2, "web");
                });
            });
            s.msg(3, |t| {
                t.msg(1, |_| {});
                t.msg(2, |p| {
                    p.msg(2, |c| {
                        c.str(1, "nginx").str(2, "nginx").msg(8, |_| {});
                        c.msg(6, |port| {
                            port.int(3, 80).str(4, "TCP");
                        });
                    });
                    p.msg(1, |v| {
                        v.str(1, "data").msg(2, |src| {
                            src.msg(2, |_| {});
                        });
                    });
                });
            });
            s.msg(4, |_| {}).int(5, 0).int(7, 0);
            s.msg(4, |st| {
                st.msg(2, |ru| {
                    ru.msg(1, |i| {
                        i.int(1, 1).str(3, "25%");
                    });
                    ru.msg(2, |i| {
                        i.int(1, 0).int(2, 1);
                    });
                });
            });
        })
        .msg(3, |_| {});
        let v = decode(&envelope("apps/v1", "Deployment", &w.0)).expect("decodes");
        assert_eq!(
            v,
            json!({
                "kind": "Deployment", "apiVersion": "apps/v1",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {}, "spec": {
                        "containers": [{"name": "nginx", "image": "nginx", "resources": {},
                            "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
                        "volumes": [{"name": "data", "emptyDir": {}}],
                    }},
                    "strategy": {"rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
                },
                "status": {},
            })
        );
    }

    #[test]
    fn secrets_times_and_quantities() {
        let mut w = W::default();
        w.msg(1, |m| {
            m.str(1, "s").msg(8, |t| {
                t.int(1, 1_700_000_000);
            });
        })
        .msg(2, |e| {
            e.str(1, "k").bytes(2, b"\x00\xff");
        })
        .str(3, "Opaque");
        let v = decode(&envelope("v1", "Secret", &w.0)).expect("decodes");
        assert_eq!(v["data"]["k"], "AP8=");
        assert_eq!(v["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
        let mut w = W::default();
        w.msg(2, |s| {
            s.msg(2, |r| {
                r.msg(2, |e| {
                    e.str(1, "storage").msg(2, |q| {
                        q.str(1, "1Gi");
                    });
                });
            });
        });
        let v = decode(&envelope("v1", "PersistentVolumeClaim", &w.0)).expect("decodes");
        assert_eq!(v["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
    }

    #[test]
    fn bad_bodies_are_bad_requests() {
        assert_eq!(decode(b"{}").unwrap_err().code, 400);
        assert_eq!(decode(&envelope("v1", "Nope", &[])).unwrap_err().code, 400);
        let mut truncated = envelope("v1", "Namespace", &[0x0a, 0x05]);
        truncated.truncate(truncated.len() - 1);
        assert_eq!(decode(&truncated).unwrap_err().code, 400);
        assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
        assert!(!is_protobuf("application/json"));
    }
}
