//! The one HTTP request this crate makes: a bounded, timed `GET` returning a body.
//!
//! hyper's pooled client keeps the connection to Latchkey open between feed polls.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::error::Error;

#[cfg(feature = "rustls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "rustls"))]
type Connector = HttpConnector;

pub(crate) struct HttpClient {
    client: Client<Connector, Empty<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// `tls`: whether any URL is `https://` (only then are the system's root certificates
    /// loaded, so that plain-HTTP use never depends on them).
    pub(crate) fn new(timeout: Duration, tls: bool) -> Result<Self, Error> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        #[cfg(feature = "rustls")]
        let connector = {
            http.enforce_http(false);
            let provider = rustls::crypto::aws_lc_rs::default_provider();
            let builder = hyper_rustls::HttpsConnectorBuilder::new();
            let builder = if tls {
                builder
                    .with_provider_and_native_roots(provider)
                    .map_err(|e| Error::Tls(e.to_string()))?
            } else {
                let config = rustls::ClientConfig::builder_with_provider(provider.into())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Tls(e.to_string()))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                builder.with_tls_config(config)
            };
            builder.https_or_http().enable_http1().wrap_connector(http)
        };
        #[cfg(not(feature = "rustls"))]
        let _ = tls;
        #[cfg(not(feature = "rustls"))]
        let connector = http;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Ok(HttpClient { client, timeout })
    }

    /// `GET uri` with `Accept: application/json`; the body of a 200 answer, at most `limit`
    /// bytes, all within the configured timeout. Errors are short human-readable reasons.
    pub(crate) async fn get_json(
        &self,
        uri: Uri,
        authorization: Option<&HeaderValue>,
        limit: usize,
    ) -> Result<Bytes, String> {
        let mut request = Request::get(uri).header(header::ACCEPT, "application/json");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value.clone());
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| format!("bad request: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| describe_client_error(&e))?;
            let status = response.status();
            if status != StatusCode::OK {
                return Err(format!("HTTP status {status}"));
            }
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        format!("response body over {limit} bytes")
                    } else {
                        format!("reading the body failed: {e}")
                    }
                })?;
            Ok(body.to_bytes())
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no complete answer within {:?}", self.timeout)),
        }
    }
}

/// hyper-util's error's `Display` is terse; its source says what happened.
fn describe_client_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
