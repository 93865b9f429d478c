//! Connecting to a cluster: a kubeconfig file and context, or the usual
//! inference (in-cluster service account, then `$KUBECONFIG` / ~/.kube/config).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// How to reach the Kubernetes API server.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// A kubeconfig file (default: in-cluster config, then $KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl KubeArgs {
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .with_context(|| format!("cannot use the kubeconfig {}", path.display()))?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .context("cannot load the kubeconfig context")?,
            None => kube::Config::infer()
                .await
                .context("cannot find a cluster: pass --kubeconfig FILE, set KUBECONFIG, or run inside a cluster")?,
        };
        kube::Client::try_from(config).context("cannot create a Kubernetes client")
    }
}
