//! nginx (Debian's package) with `auth_request` in front of an upstream, asking Latchkey's
//! `GET /v1/authorize`: no credentials → 401 and the upstream is never reached; a valid token
//! → the upstream sees `X-Latchkey-User`; a revoked one → 401 at once. And nginx as the
//! reverse proxy in front of Latchkey itself, configured as docs/operations.md shows ("Behind
//! a reverse proxy"): with `trusted_proxies` Latchkey sees the client's address.
use crate::harness::*;
use crate::socket::start;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const NGINX: &str = "/usr/sbin/nginx";

struct Nginx {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_nginx(latchkey: &str, upstream: &str) -> Nginx {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = dir.path().display();
    let latchkey = latchkey.trim_start_matches("http://");
    let upstream = upstream.trim_start_matches("http://");
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  # As in docs/operations.md, "Behind a reverse proxy" (under /latchkey/ here).
  upstream latchkey {{
    server {latchkey};
    keepalive 8;
    keepalive_timeout 60s;
  }}
  server {{
    listen 127.0.0.1:{port};
    client_header_timeout 10s;
    client_body_timeout 30s;
    client_max_body_size 64k;
    location /latchkey/ {{
      proxy_pass http://latchkey/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_read_timeout 1h;
    }}
    location = /_latchkey {{
      internal;
      proxy_pass http://{latchkey}/v1/authorize;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }}
    location / {{
      auth_request /_latchkey;
      auth_request_set $latchkey_user $upstream_http_x_latchkey_user;
      auth_request_set $latchkey_username $upstream_http_x_latchkey_username;
      proxy_set_header X-Latchkey-User $latchkey_user;
      proxy_set_header X-Latchkey-Username $latchkey_username;
      proxy_pass http://{upstream};
    }}
  }}
}}
"#
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write conf");
    let child = std::process::Command::new(NGINX)
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nginx");
    Nginx {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// An upstream that counts hits and echoes the identity headers it received.
async fn echo_upstream(hits: Arc<AtomicUsize>) -> String {
    use axum::http::HeaderMap;
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            axum::Json(serde_json::json!({"user": get("x-latchkey-user"), "username": get("x-latchkey-username")}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// Whether nginx is here; without it the test is skipped, unless it is required.
fn have_nginx() -> bool {
    if !std::path::Path::new(NGINX).exists() {
        assert!(
            std::env::var("LATCHKEY_REQUIRE_NGINX").as_deref() != Ok("1"),
            "nginx is required here (LATCHKEY_REQUIRE_NGINX=1) but {NGINX} is missing"
        );
        eprintln!("SKIPPED: the nginx test needs Debian's nginx (apt-get install nginx-light)");
        return false;
    }
    true
}

async fn wait_for(nginx: &Nginx) {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(format!("{}/", nginx.base)).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nginx did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_in_front_of_an_upstream() {
    if !have_nginx() {
        return;
    }
    let latchkey = start(test_config()).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream = echo_upstream(hits.clone()).await;
    let nginx = start_nginx(&latchkey.base, &upstream);
    let client = reqwest::Client::new();
    wait_for(&nginx).await;

    // No credentials (even with a forged identity header): 401, upstream untouched.
    let r = client
        .get(format!("{}/data", nginx.base))
        .header("x-latchkey-user", "forged")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // A valid token: the upstream sees who it is.
    let r = client
        .post(format!("{}/v1/users", latchkey.base))
        .json(&serde_json::json!({"username": "nginx-user", "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    let user_id = r.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let token: serde_json::Value = client
        .post(format!("{}/oauth/token", latchkey.base))
        .form(&[
            ("grant_type", "password"),
            ("username", "nginx-user"),
            ("password", PASSWORD),
            ("client_id", "spa"),
        ])
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let access = token["access_token"].as_str().expect("access");
    let r = client
        .get(format!("{}/data", nginx.base))
        .bearer_auth(access)
        .header("x-latchkey-user", "forged")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        seen["user"],
        user_id.as_str(),
        "nginx must overwrite a forged identity header"
    );
    assert_eq!(seen["username"], "nginx-user");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Revoked: refused at once.
    client
        .post(format!("{}/oauth/revoke", latchkey.base))
        .form(&[
            ("token", token["refresh_token"].as_str().expect("refresh")),
            ("client_id", "spa"),
        ])
        .send()
        .await
        .expect("revoke");
    let r = client
        .get(format!("{}/data", nginx.base))
        .bearer_auth(access)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// The `ip` of the current session in `GET {base}/v1/sessions`.
async fn current_session_ip(client: &reqwest::Client, base: &str, access: &str) -> String {
    let list: serde_json::Value = client
        .get(format!("{base}/v1/sessions"))
        .bearer_auth(access)
        .send()
        .await
        .expect("sessions")
        .json()
        .await
        .expect("json");
    list.as_array()
        .expect("list")
        .iter()
        .find(|s| s["current"] == true)
        .and_then(|s| s["ip"].as_str())
        .expect("the current session's ip")
        .to_string()
}

async fn token_via(client: &reqwest::Client, base: &str, forged_xff: Option<&str>) -> String {
    let mut request = client.post(format!("{base}/oauth/token")).form(&[
        ("grant_type", "password"),
        ("username", "behind-nginx"),
        ("password", PASSWORD),
        ("client_id", "spa"),
    ]);
    if let Some(xff) = forged_xff {
        request = request.header("x-forwarded-for", xff);
    }
    let r = request.send().await.expect("login");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    body["access_token"].as_str().expect("access").to_string()
}

/// Latchkey behind nginx with `trusted_proxies = ["127.0.0.1/32"]`: a client connecting to
/// nginx from 127.0.0.2 is listed as 127.0.0.2 even when it forges `X-Forwarded-For`; a
/// client reaching Latchkey directly cannot claim an address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_the_client_address_to_latchkey() {
    if !have_nginx() {
        return;
    }
    let mut config = test_config();
    config.trusted_proxies = vec!["127.0.0.1/32".into()];
    let latchkey = start(config).await;
    let upstream = echo_upstream(Arc::new(AtomicUsize::new(0))).await;
    let nginx = start_nginx(&latchkey.base, &upstream);
    wait_for(&nginx).await;
    let via_nginx = format!("{}/latchkey", nginx.base);
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let r = client
        .post(format!("{via_nginx}/v1/users"))
        .json(&serde_json::json!({"username": "behind-nginx", "password": PASSWORD}))
        .send()
        .await
        .expect("sign up through nginx");
    assert_eq!(r.status(), 201);

    let access = token_via(&client, &via_nginx, Some("6.6.6.6")).await;
    assert_eq!(
        current_session_ip(&client, &via_nginx, &access).await,
        "127.0.0.2"
    );

    // Directly from an untrusted address: the forged header is ignored.
    let direct = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .build()
        .expect("client");
    let access = token_via(&direct, &latchkey.base, Some("6.6.6.6")).await;
    assert_eq!(
        current_session_ip(&direct, &latchkey.base, &access).await,
        "127.0.0.3"
    );
}
