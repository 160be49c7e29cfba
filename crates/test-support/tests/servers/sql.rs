//! SQLite and MariaDB, driven with sqlx: migrations applied, rows written and read.

use std::path::Path;

use forge_test_support::{MariaDb, SqliteDb};
use sqlx::Connection as _;
use sqlx::migrate::Migrator;

async fn migrator() -> Migrator {
    Migrator::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/migrations"))
        .await
        .expect("the test migrations")
}

#[tokio::test]
async fn sqlite_migrates_and_queries() {
    let db = SqliteDb::new().unwrap();
    assert_eq!(
        db.url(),
        format!("sqlite://{}?mode=rwc", db.path().display())
    );
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect(&db.url())
        .await
        .unwrap();
    migrator().await.run(&pool).await.unwrap();
    sqlx::query("INSERT INTO signups (username, created_at, email) VALUES (?, ?, ?)")
        .bind("alice")
        .bind(1_700_000_000_i64)
        .bind("alice@example.org")
        .execute(&pool)
        .await
        .unwrap();
    let email: String = sqlx::query_scalar("SELECT email FROM signups WHERE username = ?")
        .bind("alice")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(email, "alice@example.org");
    pool.close().await;
    assert!(db.path().is_file());
}

#[tokio::test]
async fn mariadb_databases_are_fresh_migrated_and_dropped() {
    let first = MariaDb::start().await.unwrap();
    let second = MariaDb::start().await.unwrap();
    assert_ne!(first.database(), second.database());
    assert!(first.url().starts_with("mysql://"));
    assert!(first.url().ends_with(&format!("/{}", first.database())));

    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&first.url())
        .await
        .unwrap();
    migrator().await.run(&pool).await.unwrap();
    sqlx::query("INSERT INTO signups (id, username, created_at, email) VALUES (?, ?, ?, ?)")
        .bind(1_i64)
        .bind("Zoë")
        .bind(1_700_000_000_i64)
        .bind("zoe@example.org")
        .execute(&pool)
        .await
        .unwrap();
    let name: String = sqlx::query_scalar("SELECT username FROM signups WHERE email = ?")
        .bind("zoe@example.org")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, "Zoë", "utf8mb4 round trip");
    pool.close().await;

    // The second database is untouched by the first one's migration.
    let mut conn = sqlx::mysql::MySqlConnection::connect(&second.url())
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 0);

    // Dropping the handle drops the database.
    let gone = first.database().to_owned();
    drop(first);
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?",
    )
    .bind(gone)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(left, 0);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn dedicated_mariadb_server_restarts_with_its_data() {
    if forge_test_support::process::find_binary("mariadbd", "mariadb-server").is_err() {
        eprintln!("mariadbd is not installed; the shared-server fallback is tested above");
        return;
    }
    let mut server = forge_test_support::MariaDbServer::start().await.unwrap();
    let db = server.create_database().await.unwrap();
    let mut conn = sqlx::mysql::MySqlConnection::connect(&db.url())
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (v INT)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (42)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    server.restart().await.unwrap();
    let mut conn = sqlx::mysql::MySqlConnection::connect(&db.url())
        .await
        .unwrap();
    let v: i32 = sqlx::query_scalar("SELECT v FROM t")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, 42);
    conn.close().await.unwrap();

    server.kill().unwrap();
    assert!(
        sqlx::mysql::MySqlConnection::connect(&db.url())
            .await
            .is_err()
    );
}
