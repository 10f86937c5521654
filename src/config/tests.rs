//! The configuration's own tests: every error names its variable, nothing secret prints.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;

#[derive(Parser)]
struct T {
    #[command(flatten)]
    s: Settings,
}

fn parse(args: &[&str]) -> Result<Settings, String> {
    let mut all = vec!["t"];
    all.extend_from_slice(args);
    T::try_parse_from(all).map(|t| t.s).map_err(|e| e.to_string())
}

fn settings(args: &[&str]) -> Settings {
    parse(args).unwrap()
}

fn url(s: &str) -> DatabaseUrl {
    DatabaseUrl::parse(s).unwrap()
}

/// A configuration with Plaid keys and the keys they require.
fn with_plaid_keys(db: &str) -> Config {
    let key = STANDARD.encode([9u8; 32]);
    let jwt = "0123456789abcdef0123456789abcdef";
    let args = ["--database-url", db, "--plaid-client-id", "id", "--plaid-secret", "s", "--token-encryption-key", &key];
    let mut all = args.to_vec();
    all.extend(["--jwt-secret", jwt]);
    settings(&all).resolve().unwrap()
}

fn tmp_db() -> String {
    let dir = std::env::temp_dir().join(format!("bankgraph-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}/x.db", dir.display())
}

#[test]
fn with_nothing_set_it_runs_offline_with_generated_development_secrets() {
    let db = tmp_db();
    let c = settings(&["--database-url", &db]).resolve().unwrap();
    assert!(matches!(c.identity.plaid, PlaidTarget::Emulator(_)));
    assert!(c.gateway.auth.development);
    let path = c.identity.dev_secrets_path.clone().unwrap();
    assert!(path.exists());
    let again = settings(&["--database-url", &db]).resolve().unwrap();
    assert_eq!(
        again.identity.custody.current.expose_secret(),
        c.identity.custody.current.expose_secret(),
        "kept across starts"
    );
}

#[test]
fn real_plaid_refuses_development_secrets_and_says_what_is_missing() {
    let db = tmp_db();
    let e = settings(&["--database-url", &db, "--plaid-client-id", "id", "--plaid-secret", "s"]).resolve().unwrap_err();
    assert!(e.0.contains("TOKEN_ENCRYPTION_KEY") && e.0.contains("JWT_SECRET"), "{e}");
    let ok = with_plaid_keys(&db);
    assert!(matches!(ok.identity.plaid, PlaidTarget::Remote { .. }));
}

#[test]
fn a_bad_value_names_its_variable() {
    let db = tmp_db();
    for (args, var) in [
        (vec!["--bind-addr", "nope"], "BIND_ADDR"),
        (vec!["--token-encryption-key", "c2hvcnQ="], "TOKEN_ENCRYPTION_KEY"),
        (vec!["--plaid-products", "balance"], "PLAID_PRODUCTS"),
        (vec!["--jwt-algorithm", "none"], "JWT_ALGORITHM"),
        (vec!["--refresh-min-interval-seconds=-1"], "REFRESH_MIN_INTERVAL_SECONDS"),
        (vec!["--plaid-redirect-uri", "myapp://oauth"], "PLAID_REDIRECT_URI"),
    ] {
        let mut a = vec!["--database-url", db.as_str()];
        a.extend(args);
        // clap refuses a value of the wrong type as it parses, naming the variable as the
        // argument's value; what only makes sense with other settings fails in `resolve`.
        match parse(&a) {
            Err(e) => assert!(e.contains(&format!("<{var}>")), "{e}"),
            Ok(s) => {
                let e = s.resolve().unwrap_err();
                assert!(e.0.starts_with(var), "{e}");
            }
        }
    }
}

#[test]
fn no_debug_output_shows_a_secret_or_a_database_password() {
    let db = tmp_db();
    let key = STANDARD.encode([7u8; 32]);
    let s = settings(&[
        "--database-url",
        "postgres://app:hunter2-password@127.0.0.1/bank",
        "--jwt-secret",
        "jwt-secret-0123456789-0123456789-abc",
        "--token-encryption-key",
        &key,
        "--plaid-client-id",
        "id",
        "--plaid-secret",
        "plaid-secret-value",
        "--plaid-proxy-client-id",
        "proxy",
        "--plaid-proxy-api-key",
        "proxy-api-key-value",
    ]);
    let c = {
        let mut t = s.clone();
        t.store.database_url = DatabaseUrl::parse(&db).unwrap();
        t
    }
    .resolve()
    .unwrap();
    for text in [format!("{s:?}"), format!("{c:?}"), s.store.database_url.to_string()] {
        for secret in ["hunter2-password", "jwt-secret-0123", &key, "plaid-secret-value", "proxy-api-key-value"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert_eq!(s.store.database_url.to_string(), "postgres://app:***@127.0.0.1/bank?sslmode=disable");
    assert_eq!(s.store.database_url.expose(), "postgres://app:hunter2-password@127.0.0.1/bank?sslmode=disable");
}

#[test]
fn dev_secrets_sit_next_to_the_sqlite_file_or_in_the_users_directory() {
    assert_eq!(dev_secrets_path(&url("sqlite://data/bank.db")), PathBuf::from("data/bank.db.dev-secrets.json"));
    assert_eq!(dev_secrets_path(&url("sqlite://bankgraph.db")), PathBuf::from("./bankgraph.db.dev-secrets.json"));
    let pg = dev_secrets_path(&url("postgres://x/y"));
    assert!(pg.is_absolute() && pg.to_string_lossy().contains("/bankgraph/dev-secrets-"), "{}", pg.display());
    assert_ne!(pg, dev_secrets_path(&url("postgres://x/z")), "one file per database");
    assert_eq!(dev_secrets_path(&url("postgres://u:one@x/y")), dev_secrets_path(&url("postgres://u:two@x/y")));
}

#[cfg(unix)]
#[test]
fn a_secrets_file_others_can_read_or_that_git_tracks_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let db = tmp_db();
    let path = settings(&["--database-url", &db]).resolve().unwrap().identity.dev_secrets_path.unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = settings(&["--database-url", &db]).resolve().unwrap_err();
    assert!(e.0.contains("can be read by other users"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(settings(&["--database-url", &db]).resolve().is_ok());
    // Tracked by git (as bankgraph.dev-secrets.json once was in this repository).
    let dir = path.parent().unwrap();
    let git = |args: &[&str]| std::process::Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(git(&["init", "-q"]).status.success());
    assert!(git(&["add", "-f", path.file_name().unwrap().to_str().unwrap()]).status.success());
    let e = settings(&["--database-url", &db]).resolve().unwrap_err();
    assert!(e.0.contains("tracked by git"), "{e}");
}

#[test]
fn booleans_numbers_and_enums_are_typed_as_they_parse() {
    let db = tmp_db();
    let s = settings(&["--database-url", &db, "--graphql-introspection", "off", "--job-workers", "0"]);
    assert!(!s.public.graphql_introspection);
    let c = s.resolve().unwrap();
    assert!(!c.gateway.graphql.introspection);
    assert_eq!(c.identity.jobs.workers, 0);
    assert!(settings(&["--database-url", &db]).public.graphql_introspection, "on by default");
    for (args, var) in [
        (vec!["--job-workers", "65"], "JOB_WORKERS"),
        (vec!["--graphql-introspection", "maybe"], "GRAPHQL_INTROSPECTION"),
        (vec!["--plaid-env", "staging"], "PLAID_ENV"),
        (vec!["--max-body-bytes", "10"], "MAX_BODY_BYTES"),
        (vec!["--database-url", "mysql://x"], "DATABASE_URL"),
    ] {
        let e = parse(&args).unwrap_err();
        assert!(e.contains(&format!("<{var}>")), "{e}");
    }
}

#[test]
fn offline_the_mobile_flows_have_development_defaults_and_with_plaid_keys_none() {
    let db = tmp_db();
    let offline = settings(&["--database-url", &db]).resolve().unwrap();
    // OAuth banks send the user back to the demo, which finishes Link.
    assert_eq!(offline.identity.link.redirect_uri.as_deref(), Some("http://127.0.0.1:8000/demo"));
    let any = settings(&["--database-url", &db, "--bind-addr", "0.0.0.0:9000"]).resolve().unwrap();
    assert_eq!(any.identity.link.redirect_uri.as_deref(), Some("http://127.0.0.1:9000/demo"));
    let no_demo = settings(&["--database-url", &db, "--demo-enabled", "false"]).resolve().unwrap();
    assert_eq!(no_demo.identity.link.redirect_uri.as_deref(), Some(OFFLINE_REDIRECT_URI));
    let chosen =
        settings(&["--database-url", &db, "--plaid-redirect-uri", "https://app.example/oauth"]).resolve().unwrap();
    assert_eq!(chosen.identity.link.redirect_uri.as_deref(), Some("https://app.example/oauth"));
    assert_eq!(offline.identity.link.android_package_name.as_deref(), Some(OFFLINE_ANDROID_PACKAGE_NAME));
    let real = with_plaid_keys(&db);
    assert!(real.identity.link.redirect_uri.is_none() && real.identity.link.android_package_name.is_none());
}

#[derive(Parser)]
struct G {
    #[command(flatten)]
    s: GatewaySettings,
}

#[derive(Parser)]
struct I {
    #[command(flatten)]
    s: IdentitySettings,
}

fn gateway(args: &[&str], env: &[(&str, &str)]) -> Result<SplitGatewayConfig, String> {
    let mut all = vec!["t", "--jwt-secret", "0123456789abcdef0123456789abcdef"];
    all.extend_from_slice(args);
    let s = G::try_parse_from(all).map_err(|e| e.to_string())?.s;
    s.resolve(env.iter().map(|(k, v)| (k.to_string(), v.to_string()))).map_err(|e| e.to_string())
}

#[test]
fn a_gateway_refuses_what_only_the_identity_service_uses() {
    let ok = gateway(&["--identity-url", "http://10.0.0.5:8003, http://10.0.0.6:8003"], &[("HOME", "/root")]).unwrap();
    assert_eq!(ok.rpc.endpoints.len(), 2);
    for var in ["DATABASE_URL", "TOKEN_ENCRYPTION_KEY", "TOKEN_ENCRYPTION_PREVIOUS_KEYS", "PLAID_SECRET", "PLAID_ENV"] {
        let e = gateway(&["--identity-url", "http://10.0.0.5:8003"], &[(var, "x")]).unwrap_err();
        assert!(e.contains(var) && e.contains("must not be set"), "{e}");
    }
    // An empty variable is not a value (a deployment template's blank line).
    gateway(&["--identity-url", "http://10.0.0.5:8003"], &[("DATABASE_URL", "")]).unwrap();
    for (args, what) in [
        (vec![], "IDENTITY_URL"),
        (vec!["--identity-url", "10.0.0.5:8003"], "IDENTITY_URL"),
        (vec!["--identity-url", "https://10.0.0.5:8003"], "http://"),
        (vec!["--identity-url", "http://10.0.0.5:8003/path"], "IDENTITY_URL"),
        (vec!["--identity-url", "http://a:1", "--identity-service-token", "short"], "at least 32"),
        (vec!["--identity-url", "http://a:1", "--identity-tls-cert", "/nonexistent"], "set together"),
    ] {
        let e = gateway(&args, &[]).unwrap_err();
        assert!(e.contains(what), "{args:?}: {e}");
    }
    // Without an explicit JWT key: no development secret is generated on the gateway's host.
    let s = G::try_parse_from(["t", "--identity-url", "http://a:1"]).unwrap().s;
    let e = s.resolve(std::iter::empty()).unwrap_err();
    assert!(e.0.contains("JWT_SECRET"), "{e}");
}

#[test]
fn the_identity_service_needs_a_token_off_loopback() {
    let db = tmp_db();
    let parse = |args: &[&str]| {
        let mut all = vec!["t", "--database-url", db.as_str()];
        all.extend_from_slice(args);
        I::try_parse_from(all).unwrap().s.resolve()
    };
    let local = parse(&[]).unwrap();
    assert!(local.rpc.token.is_none() && local.rpc.bind.ip().is_loopback());
    let e = parse(&["--identity-bind-addr", "0.0.0.0:8003"]).unwrap_err();
    assert!(e.0.contains("IDENTITY_SERVICE_TOKEN"), "{e}");
    let open = parse(&[
        "--identity-bind-addr",
        "0.0.0.0:8003",
        "--identity-service-token",
        "0123456789abcdef0123456789abcdef",
    ])
    .unwrap();
    assert!(open.rpc.token.is_some());
    assert!(!format!("{open:?}").contains("0123456789abcdef0123456789abcdef"), "no Debug shows the token");
}

#[test]
fn a_postgres_url_gets_an_explicit_sslmode_on_this_machine_and_a_warning_elsewhere() {
    use super::settings::DatabaseUrl;
    let local = DatabaseUrl::parse("postgres://u:p@127.0.0.1:5432/db").unwrap();
    assert_eq!(local.expose(), "postgres://u:p@127.0.0.1:5432/db?sslmode=disable");
    assert!(!local.unverified_tls());
    assert_eq!(local.name(), "postgres://u:***@127.0.0.1:5432/db", "development secrets keep their file");
    let named = DatabaseUrl::parse("postgres://u@localhost/db?sslmode=require").unwrap();
    assert_eq!(named.expose(), "postgres://u@localhost/db?sslmode=require", "an explicit choice is kept");
    let remote = DatabaseUrl::parse("postgres://u@db.internal/db").unwrap();
    assert_eq!(remote.expose(), "postgres://u@db.internal/db", "sqlx's default elsewhere");
    assert!(remote.unverified_tls());
    assert!(DatabaseUrl::parse("postgres://u@db.internal/db?sslmode=require").unwrap().unverified_tls());
    assert!(!DatabaseUrl::parse("postgres://u@db.internal/db?sslmode=verify-full").unwrap().unverified_tls());
    assert!(!DatabaseUrl::parse("sqlite://bankgraph.db").unwrap().unverified_tls());
}

/// The emulator takes no credentials: it binds a non-loopback address only when
/// EMULATOR_ALLOW_REMOTE says so, and the refusal names that setting.
#[test]
fn the_emulator_binds_a_non_loopback_address_only_when_allowed() {
    let db = tmp_db();
    for addr in ["0.0.0.0:8002", "192.0.2.10:8002", "[::]:8002"] {
        let e = settings(&["--database-url", &db, "--plaid-emulator-addr", addr]).resolve().unwrap_err();
        assert!(e.0.contains("EMULATOR_ALLOW_REMOTE") && e.0.contains("PLAID_EMULATOR_ADDR"), "{addr}: {e}");
    }
    let allowed = ["--database-url", &db, "--plaid-emulator-addr", "0.0.0.0:8002", "--emulator-allow-remote", "true"];
    assert!(matches!(settings(&allowed).resolve().unwrap().identity.plaid, PlaidTarget::Emulator(_)));
    for addr in ["127.0.0.1:8002", "[::1]:8002"] {
        settings(&["--database-url", &db, "--plaid-emulator-addr", addr]).resolve().unwrap();
    }
    // With real Plaid keys no emulator runs, so its address does not matter.
    let key = STANDARD.encode([9u8; 32]);
    let real = [
        "--database-url",
        &db,
        "--plaid-client-id",
        "id",
        "--plaid-secret",
        "s",
        "--token-encryption-key",
        &key,
        "--jwt-secret",
        "0123456789abcdef0123456789abcdef",
        "--plaid-emulator-addr",
        "0.0.0.0:8002",
    ];
    settings(&real).resolve().unwrap();
}

#[test]
fn the_deepest_page_offset_is_configurable() {
    let db = tmp_db();
    assert_eq!(settings(&["--database-url", &db]).resolve().unwrap().gateway.graphql.max_page_offset, 10_000);
    let c = settings(&["--database-url", &db, "--max-page-offset", "20"]).resolve().unwrap();
    assert_eq!(c.gateway.graphql.max_page_offset, 20);
    let e = parse(&["--database-url", &db, "--max-page-offset=-1"]).unwrap_err();
    assert!(e.contains("<MAX_PAGE_OFFSET>"), "{e}");
}
