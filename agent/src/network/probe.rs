//! Does an apiserver answer at an address? A TCP connect and a TLS handshake, each with a
//! deadline, so a silently dropped SYN (the seed's `dial tcp 10.96.0.1:443: i/o timeout`)
//! ends in a result. The certificate is not verified here: this asks whether the path is open;
//! the kube client that then uses it verifies the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

/// Why an address did not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// No answer to the TCP connect within the deadline (packets dropped: no route, no DNAT).
    Timeout(Duration),
    /// The connect failed at once (refused, unreachable).
    Connect(String),
    /// TCP answered; the TLS handshake failed or timed out.
    Tls(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Timeout(d) => write!(f, "i/o timeout: no answer within {d:?}"),
            ProbeError::Connect(e) => write!(f, "{e}"),
            ProbeError::Tls(e) => write!(f, "TCP answered but the TLS handshake failed: {e}"),
        }
    }
}

/// Connect to `addr` and complete a TLS handshake, each within `deadline`.
pub async fn tls(addr: SocketAddr, deadline: Duration) -> Result<(), ProbeError> {
    let stream = match tokio::time::timeout(deadline, TcpStream::connect(addr)).await {
        Err(_) => return Err(ProbeError::Timeout(deadline)),
        Ok(Err(e)) => return Err(ProbeError::Connect(format!("dial tcp {addr}: {e}"))),
        Ok(Ok(stream)) => stream,
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config()?));
    let name = ServerName::IpAddress(addr.ip().into());
    match tokio::time::timeout(deadline, connector.connect(name, stream)).await {
        Err(_) => Err(ProbeError::Tls(format!("no handshake within {deadline:?}"))),
        Ok(Err(e)) => Err(ProbeError::Tls(e.to_string())),
        Ok(Ok(_)) => Ok(()),
    }
}

/// `GET <path>` over plain HTTP/1.0 within `deadline`: the status code (kube-proxy's
/// `/healthz` answers 200, or 503 when its rules are stale).
pub async fn http_status(addr: SocketAddr, path: &str, deadline: Duration) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).into_owned())
    };
    let head = tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| format!("no answer within {deadline:?}"))?
        .map_err(|e| e.to_string())?;
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))
}

fn client_config() -> Result<rustls::ClientConfig, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ProbeError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_no_client_auth(),
    )
}

/// Accepts any certificate (see the module docs); signatures are still checked, so the
/// handshake is a real one.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
