//! Volume data for `lifeboat backup` and `lifeboat restore` run by hand:
//! the mover flags and the per-volume progress on the terminal. The work
//! itself is `lifeboat_controller::volume_data`, as in the controller.

use std::time::Duration;

use clap::Args as ClapArgs;
use lifeboat_controller::volume_data::VolumeEvent;
use lifeboat_kube::volumes::{self, MoverOptions, MoverResources, VolumeProgress};

use crate::progress::Reporter;

/// The mover pods' image, namespace and ServiceAccount: flags of `backup`,
/// `restore`, `reconcile` and `controller` alike.
#[derive(Debug, Clone, ClapArgs)]
pub struct MoverPodArgs {
    /// The mover image (lifeboat's own; set it for a mirrored registry).
    #[arg(long, value_name = "IMAGE", default_value = volumes::DEFAULT_IMAGE, env = "LIFEBOAT_MOVER_IMAGE")]
    pub mover_image: String,
    /// The namespace mover pods run in.
    #[arg(long, value_name = "NAMESPACE", default_value = volumes::MOVERS_NAMESPACE, env = "LIFEBOAT_MOVERS_NAMESPACE")]
    pub movers_namespace: String,
    /// The ServiceAccount of mover pods (deploy/ creates `lifeboat-mover`;
    /// OpenShift's SCC for `fileSystem` movers is granted to it). Default:
    /// the namespace's `default`.
    #[arg(long, value_name = "NAME", env = "LIFEBOAT_MOVER_SERVICE_ACCOUNT")]
    pub mover_service_account: Option<String>,
    /// The PriorityClass of mover pods (default: the cluster's default).
    #[arg(long, value_name = "NAME", env = "LIFEBOAT_MOVER_PRIORITY_CLASS")]
    pub mover_priority_class: Option<String>,
    /// CPU request of the mover container (a quantity: `500m`, `1`).
    #[arg(long, value_name = "QUANTITY", value_parser = quantity, env = "LIFEBOAT_MOVER_CPU_REQUEST")]
    pub mover_cpu_request: Option<String>,
    /// Memory request of the mover container (a quantity: `512Mi`, `1Gi`).
    #[arg(long, value_name = "QUANTITY", value_parser = quantity, env = "LIFEBOAT_MOVER_MEMORY_REQUEST")]
    pub mover_memory_request: Option<String>,
    /// CPU limit of the mover container.
    #[arg(long, value_name = "QUANTITY", value_parser = quantity, env = "LIFEBOAT_MOVER_CPU_LIMIT")]
    pub mover_cpu_limit: Option<String>,
    /// Memory limit of the mover container (a mover holds up to a few
    /// hundred MiB; see docs/performance.md).
    #[arg(long, value_name = "QUANTITY", value_parser = quantity, env = "LIFEBOAT_MOVER_MEMORY_LIMIT")]
    pub mover_memory_limit: Option<String>,
}

impl MoverPodArgs {
    /// `opts` with these settings.
    pub fn apply(&self, opts: MoverOptions) -> MoverOptions {
        let pick = |pairs: [(&str, &Option<String>); 2]| {
            pairs
                .into_iter()
                .filter_map(|(name, q)| Some((name.to_string(), q.clone()?)))
                .collect()
        };
        MoverOptions {
            image: self.mover_image.clone(),
            namespace: self.movers_namespace.clone(),
            service_account: self.mover_service_account.clone(),
            priority_class: self.mover_priority_class.clone(),
            resources: MoverResources {
                requests: pick([
                    ("cpu", &self.mover_cpu_request),
                    ("memory", &self.mover_memory_request),
                ]),
                limits: pick([
                    ("cpu", &self.mover_cpu_limit),
                    ("memory", &self.mover_memory_limit),
                ]),
            },
            ..opts
        }
    }
}

/// A Kubernetes resource quantity (`250m`, `2`, `1.5Gi`, `1e3`), checked
/// here so a typo is a usage error, not a refused mover pod per volume.
fn quantity(s: &str) -> Result<String, String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    let number = digits
        .split_once(['e', 'E'])
        .map_or(digits, |(mantissa, _)| mantissa);
    let exponent_ok = digits
        .split_once(['e', 'E'])
        .is_none_or(|(_, e)| e.trim_start_matches(['+', '-']).parse::<u32>().is_ok());
    let number_ok = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    const SUFFIXES: &[&str] = &[
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    if number_ok && exponent_ok && SUFFIXES.contains(&suffix) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a Kubernetes quantity (examples: 500m, 2, 512Mi, 1Gi)"
        ))
    }
}

/// Mover settings shared by `backup` and `restore`.
#[derive(Debug, Clone, ClapArgs)]
pub struct MoverArgs {
    #[command(flatten)]
    pub pod: MoverPodArgs,
    /// How long a CSI snapshot may take to become ready (seconds; default:
    /// the policy's `volumes.timeouts.snapshotReady`, else 600).
    #[arg(long, value_name = "SECONDS")]
    pub snapshot_timeout: Option<u64>,
    /// How long one volume's mover may take (seconds; default: the
    /// policy's `volumes.timeouts.move`, else 4 hours).
    #[arg(long, value_name = "SECONDS")]
    pub move_timeout: Option<u64>,
    /// How long a mover pod may stay Pending (unschedulable, its image not
    /// pulled) before its volume fails with the pod's reason (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = volumes::DEFAULT_START_TIMEOUT.as_secs())]
    pub mover_start_timeout: u64,
}

impl MoverArgs {
    /// The settings for a restore (no policy).
    pub fn options(&self) -> MoverOptions {
        self.overrides(self.pod.apply(MoverOptions {
            start_timeout: Duration::from_secs(self.mover_start_timeout),
            ..MoverOptions::default()
        }))
    }

    /// The settings for a backup of `policy`: its timeouts unless a flag
    /// says otherwise.
    pub fn for_policy(&self, policy: &lifeboat_core::BackupPolicy) -> MoverOptions {
        self.overrides(lifeboat_controller::volume_data::policy_movers(
            &self.options(),
            policy,
        ))
    }

    fn overrides(&self, mut opts: MoverOptions) -> MoverOptions {
        if let Some(s) = self.snapshot_timeout {
            opts.snapshot_timeout = Duration::from_secs(s);
        }
        if let Some(s) = self.move_timeout {
            opts.move_timeout = Duration::from_secs(s);
        }
        opts
    }
}

/// One line per step and progress report of the volume `what`.
pub fn show_progress(reporter: &Reporter, what: &str, p: &VolumeProgress) {
    match p {
        VolumeProgress::Step { step } => reporter.line(&format!("volume {what}: {step}"), 0),
        VolumeProgress::Moving {
            bytes_done,
            bytes_total,
            files_done,
            files_total,
        } => reporter.line(
            &format!(
                "volume {what}: {bytes_done}/{bytes_total} bytes, {files_done}/{files_total} files"
            ),
            *bytes_done,
        ),
    }
}

/// Shows what happens to a backup's volumes.
pub fn show(reporter: &Reporter) -> impl Fn(VolumeEvent<'_>) + Send + Sync + use<> {
    let reporter = reporter.clone();
    move |event| match event {
        VolumeEvent::Progress {
            namespace,
            pvc,
            progress,
        } => show_progress(&reporter, &format!("{namespace}/{pvc}"), progress),
        VolumeEvent::NotProtected {
            namespace,
            pvc,
            reason,
        } => reporter.line(
            &format!("volume {namespace}/{pvc}: not protected: {reason}"),
            0,
        ),
        VolumeEvent::Skipped {
            namespace,
            pvc,
            decided_by,
        } => reporter.line(
            &format!("volume {namespace}/{pvc}: skipped ({decided_by})"),
            0,
        ),
        VolumeEvent::Hook {
            namespace,
            pod,
            message,
        } => reporter.line(&format!("pod {namespace}/{pod}: {message}"), 0),
        VolumeEvent::Done {
            namespace,
            pvc,
            result: r,
        } => {
            let kept = r.kept.as_ref().map(|k| {
                format!(
                    "kept in the cluster as VolumeSnapshotContent {} (not disaster-proof: it \
                     lives in the cluster's storage system)",
                    k.content
                )
            });
            let line = match kept {
                Some(kept) if r.snapshot.is_empty() => {
                    format!("volume {namespace}/{pvc}: {kept}")
                }
                kept => format!(
                    "volume {namespace}/{pvc}: snapshot {} ({} files, {} bytes, {} new){}",
                    r.snapshot.get(..8).unwrap_or(&r.snapshot),
                    r.files,
                    r.bytes,
                    r.new_bytes,
                    kept.map(|k| format!("; {k}")).unwrap_or_default()
                ),
            };
            reporter.line(&line, r.bytes)
        }
        VolumeEvent::TakenOver {
            namespace,
            pvc,
            snapshot,
        } => reporter.line(
            &format!(
                "volume {namespace}/{pvc}: snapshot {} (moved by the interrupted run)",
                snapshot.get(..8).unwrap_or(snapshot)
            ),
            0,
        ),
        VolumeEvent::Failed {
            namespace,
            pvc,
            reason,
        } => reporter.line(&format!("volume {namespace}/{pvc}: failed: {reason}"), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::quantity;

    #[test]
    fn quantities_are_checked_as_kubernetes_reads_them() {
        for ok in ["500m", "2", "0.5", "512Mi", "1Gi", "1e3", "1.5G", "100k"] {
            assert_eq!(quantity(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "Gi", "1gb", "1.2.3", "-1", "1 Gi", "1x"] {
            let err = quantity(bad).unwrap_err();
            assert!(err.contains("not a Kubernetes quantity"), "{bad}: {err}");
        }
    }
}
