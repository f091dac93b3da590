//! The agent's way to the apiserver, switchable at run time: the `kubernetes` Service
//! (in-cluster config), or the apiserver URL and CA of the node's kubelet kubeconfig when the
//! Service does not answer from the node. Both authenticate with the agent's own
//! ServiceAccount token. Every request goes through [`Switch`], which picks the path in use, so
//! the reflectors, the publisher and the other loops share one `Client` and follow each switch
//! with their next request.
//!
//! ```text
//!  Client ─► Switch ─┬─ via service ─────────────► Client(in-cluster: ClusterIP, SA CA, SA token)
//!                    └─ via kubelet-kubeconfig ──► Client(kubelet's server + CA, SA token)
//!  network daemon ─► Paths::use_service / use_kubelet
//! ```

use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::Body;
use kube::{Client, Config};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use volpool_api::{VIA_KUBECONFIG, VIA_KUBELET_KUBECONFIG, VIA_SERVICE};

use super::kubeconfig::KubeletApiserver;

/// The apiserver paths and the one in use.
pub struct Paths {
    state: RwLock<State>,
    /// The in-cluster config the fallback copies (token, namespace); `None` outside a pod.
    incluster: Option<Config>,
    /// The URL of the primary path (the Service, or the kubeconfig's server).
    primary_url: String,
}

struct State {
    via: &'static str,
    primary: Client,
    fallback: Option<(KubeletApiserver, Client)>,
}

impl Paths {
    /// A client that follows the path in use. In a pod it starts on the Service; outside a
    /// pod it uses the inferred kubeconfig and never switches.
    pub async fn connect() -> Result<(Client, Arc<Paths>), kube::Error> {
        let (config, incluster, via) = match Config::incluster() {
            Ok(config) => (config.clone(), Some(config), VIA_SERVICE),
            Err(_) => (
                Config::infer().await.map_err(kube::Error::InferConfig)?,
                None,
                VIA_KUBECONFIG,
            ),
        };
        let namespace = config.default_namespace.clone();
        let primary_url = config.cluster_url.to_string();
        let paths = Arc::new(Paths {
            state: RwLock::new(State {
                via,
                primary: Client::try_from(config)?,
                fallback: None,
            }),
            incluster,
            primary_url,
        });
        Ok((Client::new(Switch(paths.clone()), namespace), paths))
    }

    /// The URL of the primary path.
    pub fn primary_url(&self) -> &str {
        &self.primary_url
    }

    /// Whether the agent can switch (it runs in a pod, on the Service path by default).
    pub fn switchable(&self) -> bool {
        self.incluster.is_some()
    }

    /// Use the Service; returns whether the path changed.
    pub fn use_service(&self) -> bool {
        let mut state = self.write();
        let changed = state.via == VIA_KUBELET_KUBECONFIG;
        if changed {
            state.via = VIA_SERVICE;
        }
        changed
    }

    /// Use the kubelet kubeconfig's server and CA (a new client when they changed); returns
    /// whether the path changed.
    pub fn use_kubelet(&self, found: &KubeletApiserver) -> Result<bool, String> {
        let Some(base) = &self.incluster else {
            return Err("not in a pod: the kubeconfig in use is kept".into());
        };
        let mut state = self.write();
        if state.fallback.as_ref().map(|(f, _)| f) != Some(found) {
            let client = Client::try_from(fallback_config(base, found)?)
                .map_err(|e| format!("building a client for {}: {e}", found.server))?;
            state.fallback = Some((found.clone(), client));
        }
        let changed = state.via != VIA_KUBELET_KUBECONFIG;
        state.via = VIA_KUBELET_KUBECONFIG;
        Ok(changed)
    }

    fn current(&self) -> Client {
        let state = self.read();
        match (&state.fallback, state.via) {
            (Some((_, client)), VIA_KUBELET_KUBECONFIG) => client.clone(),
            _ => state.primary.clone(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The in-cluster config with the kubelet kubeconfig's server and CA: nothing else of that
/// file is used (the ServiceAccount token file stays the credential).
pub fn fallback_config(base: &Config, found: &KubeletApiserver) -> Result<Config, String> {
    let mut config = base.clone();
    config.cluster_url = found
        .server
        .parse()
        .map_err(|e| format!("server {} in {}: {e}", found.server, found.path))?;
    config.tls_server_name = None;
    if let Some(pem) = &found.ca_pem {
        let certs = CertificateDer::pem_slice_iter(pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the CA of {}: {e}", found.path))?;
        if certs.is_empty() {
            return Err(format!("the CA of {} holds no certificate", found.path));
        }
        config.root_cert = Some(certs);
        config.root_cert_file = None;
    }
    Ok(config)
}

/// A tower service that sends each request on the path in use.
#[derive(Clone)]
pub struct Switch(Arc<Paths>);

impl tower::Service<Request<Body>> for Switch {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let client = self.0.current();
        Box::pin(async move { client.send(request).await })
    }
}
