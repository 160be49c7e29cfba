//! Part 2: personal API tokens and the JSON API.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::common::{Env, EnvOptions, GOOD_PASSWORD, make_account};

const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl kim@laptop";

pub(crate) async fn call(
    env: &Env,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", env.base_url))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_give_json_access_and_can_be_revoked() {
    let env = Env::start_with(EnvOptions {
        admin_recipients: false,
        worker: false,
        ..Default::default()
    })
    .await;
    make_account(&env, "kim", "Kim Example", GOOD_PASSWORD).await;
    let mut c = env.client();
    assert_eq!(
        c.submit(
            "/login",
            "/login",
            &[("login", "kim"), ("password", GOOD_PASSWORD)]
        )
        .await
        .status,
        303
    );
    let page = c
        .submit("/account/tokens", "/account/tokens", &[("name", "script")])
        .await;
    assert_eq!(page.status, 200);
    let re = regex::Regex::new(r#"<code id="new-token">([^<]+)</code>"#).unwrap();
    let token = re.captures(&page.body).expect("token shown once")[1].to_owned();
    assert!(
        !c.get("/account/tokens").await.body.contains(&token),
        "shown only once"
    );

    assert_eq!(call(&env, "GET", "/api/v1/me", None, "").await.0, 401);
    assert_eq!(
        call(&env, "GET", "/api/v1/me", Some("idm_wrong"), "")
            .await
            .0,
        401
    );
    let (status, me) = call(&env, "GET", "/api/v1/me", Some(&token), "").await;
    assert_eq!(status, 200);
    assert_eq!(me["uid"], "kim");
    assert_eq!(me["email"], "kim@example.org");

    let (status, added) = call(
        &env,
        "POST",
        "/api/v1/me/ssh-keys",
        Some(&token),
        &serde_json::json!({"key": ED25519}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert!(
        added["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );
    let (status, err) = call(
        &env,
        "POST",
        "/api/v1/me/ssh-keys",
        Some(&token),
        r#"{"key": "-----BEGIN OPENSSH PRIVATE KEY-----"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("private key"));
    assert_eq!(
        call(&env, "GET", "/api/v1/me", Some(&token), "").await.1["ssh_keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Without a bearer token an API POST is a form POST: CSRF applies.
    assert_eq!(
        call(&env, "POST", "/api/v1/me/ssh-keys", None, "{}")
            .await
            .0,
        403
    );

    // Revoke.
    let listed = env.core.api_tokens.list("kim").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used.is_some());
    let id = listed[0].id.to_string();
    assert_eq!(
        c.submit("/account/tokens", "/account/tokens/revoke", &[("id", &id)])
            .await
            .status,
        303
    );
    assert_eq!(
        call(&env, "GET", "/api/v1/me", Some(&token), "").await.0,
        401
    );
}
