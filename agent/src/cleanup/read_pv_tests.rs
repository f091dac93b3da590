//! `read_pv` against a scripted apiserver: it waits out errors, saying why, and stops
//! when the request is withdrawn.

use std::collections::VecDeque;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::Body;
use volpool_api::CleanupMethod;

use super::*;

/// Answers each request with the next (status, body) of its script, the last one forever.
#[derive(Clone)]
struct Scripted(Arc<Mutex<VecDeque<(u16, String)>>>);

impl tower::Service<Request<Body>> for Scripted {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        let mut script = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (status, body) = match script.len() {
            0 => (500, String::new()),
            1 => script[0].clone(),
            _ => script.pop_front().unwrap_or_default(),
        };
        let response = Response::builder()
            .status(status)
            .body(Body::from(body.into_bytes()))
            .map_err(|e| kube::Error::Service(e.into()));
        Box::pin(async move { response })
    }
}

fn api(script: &[(u16, &str)]) -> Api<PersistentVolume> {
    let script = script.iter().map(|(s, b)| (*s, b.to_string())).collect();
    Api::all(Client::new(
        Scripted(Arc::new(Mutex::new(script))),
        "default",
    ))
}

fn status(code: u16, reason: &str) -> String {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("persistentvolumes \"pv-1\" {reason}"), "reason": reason,
        "code": code})
    .to_string()
}

fn request() -> CleanupRequest {
    CleanupRequest {
        volume_id: "uuid:1".into(),
        persistent_volume: "pv-1".into(),
        pv_uid: "uid-1".into(),
        claim_uid: String::new(),
        method: CleanupMethod::Wipe,
    }
}

/// Results holding the Running result of `request()`, as the loop keeps it.
fn waiting() -> Results {
    let results = Results::default();
    results.lock().insert(
        "uid-1".into(),
        super::super::running(&request(), "t".into()),
    );
    results
}

#[tokio::test]
async fn the_pv_is_read_once_the_api_answers_and_meanwhile_the_result_says_why() {
    let pv = r#"{"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1"}}"#;
    let forbidden = status(403, "Forbidden");
    let api = api(&[(403, &forbidden), (503, ""), (200, pv)]);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let read = read_pv(&api, &request(), &waiting(), &tx).await;
    let name = read.flatten().and_then(|pv| pv.metadata.name);
    assert_eq!(name.as_deref(), Some("pv-1"));
    let note = rx.try_recv().expect("a note while it waited");
    assert_eq!(note.result, CleanupOutcome::Running);
    assert!(
        note.message
            .starts_with("waiting to read PersistentVolume pv-1 before scrubbing")
            && note.message.contains("Forbidden")
            && note
                .message
                .ends_with("nothing is touched until it can be read"),
        "{}",
        note.message
    );
}

#[tokio::test]
async fn a_pv_that_is_not_there_is_known_absent_and_a_withdrawn_request_stops_the_wait() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let missing = api(&[(404, &status(404, "NotFound"))]);
    let read = read_pv(&missing, &request(), &waiting(), &tx).await;
    assert!(matches!(read, Some(None)), "{read:?}");
    let down = api(&[(503, "")]);
    let read = read_pv(&down, &request(), &Results::default(), &tx).await;
    assert!(read.is_none(), "withdrawn: {read:?}");
}
