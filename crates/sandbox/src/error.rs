//! API errors as the Kubernetes API reports them: a `metav1.Status` object
//! with `status: Failure`, a machine-readable `reason`, the HTTP `code` and
//! `details` naming the object. Every handler returns [`ApiError`] on failure
//! and the server renders it with [`ApiError::to_json`].

use serde_json::{Value, json};

/// A failed API call, rendered as a `metav1.Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `metav1.StatusReason`, e.g. `NotFound`, `Conflict`, `Invalid`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` (name, group, kind, causes), when known.
    pub details: Option<Box<Value>>,
    /// Seconds for a `Retry-After` header and `details.retryAfterSeconds`.
    pub retry_after: Option<u64>,
}

/// `resource.group` as Kubernetes prints it in messages (`configmaps`,
/// `deployments.apps`).
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        let mut d = json!({ "name": name, "kind": kind });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        self.details = Some(Box::new(d));
        self
    }

    /// 404 NotFound for an object.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 404 NotFound for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 409 Conflict: stale resourceVersion or failed precondition.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, resource)
            ),
        )
        .with_details(group, resource, name)
    }

    /// 409 Conflict from server-side apply: the fields, each with the
    /// manager that owns it (`(field, manager)`), that the apply would change.
    pub fn apply_conflict(
        group: &str,
        resource: &str,
        name: &str,
        api_version: &str,
        conflicts: &[(String, String)],
    ) -> Self {
        let one =
            |(f, m): &(String, String)| format!("conflict with \"{m}\" using {api_version}: {f}");
        let text: Vec<String> = conflicts.iter().map(one).collect();
        let n = conflicts.len();
        let plural = if n == 1 { "" } else { "s" };
        let message = match text.as_slice() {
            [only] => format!("Apply failed with 1 conflict: {only}"),
            _ => format!(
                "Apply failed with {n} conflict{plural}: {}",
                text.join("\n")
            ),
        };
        let mut e = Self::new(409, "Conflict", message).with_details(group, resource, name);
        if let Some(d) = e.details.as_mut() {
            d["causes"] = conflicts
                .iter()
                .map(|c| json!({"reason": "FieldManagerConflict", "message": one(c), "field": c.0}))
                .collect();
        }
        e
    }

    /// The usual optimistic-concurrency conflict.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with field causes (`field`, `message`).
    pub fn invalid(group: &str, kind: &str, name: &str, causes: &[(String, String)]) -> Self {
        let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let msg = match text.len() {
            1 => text[0].clone(),
            _ => format!("[{}]", text.join(", ")),
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {msg}"),
        )
        .with_details(group, kind, name);
        if let Some(d) = e.details.as_mut() {
            d["causes"] = causes
                .iter()
                .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
                .collect();
        }
        e
    }

    /// 422 Invalid for a single field.
    pub fn invalid_field(
        group: &str,
        kind: &str,
        name: &str,
        field: &str,
        msg: impl Into<String>,
    ) -> Self {
        Self::invalid(group, kind, name, &[(field.to_string(), msg.into())])
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 410 Expired (too old resourceVersion, expired continue token).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
            ),
        )
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "the request body is too large",
        )
    }

    /// An injected error with any code (500, 503, 429 …).
    pub fn injected(code: u16, retry_after: Option<u64>, message: Option<&str>) -> Self {
        let reason = match code {
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            409 => "Conflict",
            404 => "NotFound",
            403 => "Forbidden",
            401 => "Unauthorized",
            400 => "BadRequest",
            _ => "Unknown",
        };
        let mut e = Self::new(
            code,
            reason,
            message.unwrap_or("injected fault").to_string(),
        );
        e.retry_after = retry_after;
        if let Some(s) = retry_after {
            e.details = Some(Box::new(json!({ "retryAfterSeconds": s })));
        }
        e
    }

    /// The `metav1.Status` object.
    pub fn to_json(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = (**d).clone();
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}
