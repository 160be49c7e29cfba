//! The whole signup in a real (headless) Chromium: fill the form, read the
//! mail, open the link, confirm, log in.

use std::collections::HashSet;
use std::time::Duration;

use fantoccini::{Client, Locator};
use forge_test_support::Chromedriver;

use crate::common::{Backend, Env, GOOD_PASSWORD};

async fn fill(b: &Client, id: &str, text: &str) {
    let e = b.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn submit(b: &Client) {
    b.find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn wait_for_heading(b: &Client, text: &str) {
    for _ in 0..100 {
        if let Ok(h) = b.find(Locator::Css("h1")).await
            && h.text().await.unwrap_or_default().contains(text)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no heading {text:?}; page: {}",
        b.source().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_activation_and_login_in_chromium() {
    let env = Env::start(Backend::Sqlite).await;
    let driver = Chromedriver::start().await.unwrap();
    let b = driver.new_session().await.unwrap();

    b.goto(&format!("{}/signup", env.base_url)).await.unwrap();
    fill(&b, "f-username", "Dora Browser").await;
    fill(&b, "f-shellname", "dora").await;
    fill(&b, "f-email", "dora@example.org").await;
    fill(&b, "f-password", GOOD_PASSWORD).await;
    fill(&b, "f-password2", GOOD_PASSWORD).await;
    let question = b
        .find(Locator::Css("label[for=f-human_check]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let nums: Vec<u32> = question
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse().ok())
        .collect();
    fill(&b, "f-human_check", &(nums[0] + nums[1]).to_string()).await;
    submit(&b).await;
    wait_for_heading(&b, "Check your e-mail").await;

    let link = env.activation_link_for("dora@example.org").await;
    b.goto(&link).await.unwrap();
    wait_for_heading(&b, "Activate your account").await;
    submit(&b).await;
    wait_for_heading(&b, "being created").await;

    env.wait_created("dora").await;
    let entry = env.ldap_entry("dora").await.expect("LDAP entry");
    let classes: HashSet<String> = entry.attrs["objectClass"]
        .iter()
        .map(|c| c.to_lowercase())
        .collect();
    assert!(
        ["inetorgperson", "posixaccount", "ldappublickey"]
            .iter()
            .all(|c| classes.contains(*c))
    );
    for a in [
        "cn",
        "sn",
        "uid",
        "uidNumber",
        "gidNumber",
        "homeDirectory",
        "loginShell",
        "mail",
    ] {
        assert!(
            entry.attrs.contains_key(a),
            "{a} missing: {:?}",
            entry.attrs
        );
    }
    assert_eq!(entry.attrs["cn"], vec!["Dora Browser"]);
    assert!(env.can_bind(&entry.dn, GOOD_PASSWORD).await);

    b.goto(&format!("{}/login", env.base_url)).await.unwrap();
    fill(&b, "f-login", "dora").await;
    fill(&b, "f-password", GOOD_PASSWORD).await;
    submit(&b).await;
    wait_for_heading(&b, "Your account").await;
    let uid = b
        .find(Locator::Id("account-uid"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(uid, "dora");
    b.close().await.unwrap();
}
