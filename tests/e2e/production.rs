//! Production fit through the running operator (as the chart's ServiceAccount): the
//! generated Redis password (created once, kept, rotated on request, never shown),
//! an empty password refused by name, Redis and MongoDB probed over TLS with real
//! certificates (Debian's redis-server with an ACL user; stunnel in front of the test
//! bed's MongoDB-wire server), and, on a bed with a node, placement honoured by the
//! scheduler.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::certs::{self, Stunnel, TestPki};
use crate::harness::{kubectl, put_secret, testbed_var, wait_for};
use crate::operator::{CONVERGE, Fixture, RedisKind, SYSTEM, base64, condition, condition_of, example_system, suffix};

async fn secret_value(fx: &Fixture, name: &str, key: &str) -> Option<(Vec<u8>, String)> {
    let secret = Api::<Secret>::namespaced(fx.client.clone(), &fx.ns.name).get_opt(name).await.ok()??;
    let value = secret.data.as_ref()?.get(key)?.0.clone();
    Some((value, secret.metadata.resource_version.unwrap_or_default()))
}

async fn secrets_hash(fx: &Fixture, deployment: &str) -> Option<String> {
    let d = Api::<Deployment>::namespaced(fx.client.clone(), &fx.ns.name).get_opt(deployment).await.ok()??;
    d.spec?.template.metadata?.annotations?.get("referral.dev/secrets-hash").cloned()
}

/// Events of the namespace, both APIs, as text.
fn events(namespace: &str) -> String {
    let (core, new) = event_lists(namespace);
    format!("{core}{new}")
}

/// The events of `namespace` as the core API lists them, then as events.k8s.io does
/// (two views of the same objects, listed one after the other).
fn event_lists(namespace: &str) -> (String, String) {
    let (ok, core, err) = kubectl(&["get", "events", "-n", namespace, "-o", "json"], None);
    assert!(ok, "{err}");
    let (ok, new, err) = kubectl(&["get", "events.events.k8s.io", "-n", namespace, "-o", "json"], None);
    assert!(ok, "{err}");
    (core, new)
}

/// Asserts none of `needles` is in the operator's log, the events, the status or the
/// children of the system.
async fn assert_never_shown(fx: &Fixture, needles: &[String]) {
    let log = fx.log_text();
    assert!(log.contains("TRACE") && log.len() > 10_000, "a whole trace-level log ({} bytes)", log.len());
    let status = serde_json::to_string(&fx.system().await.status).unwrap();
    let children = serde_json::to_string(&fx.children().await.values().collect::<Vec<_>>()).unwrap();
    let events = events(&fx.ns.name);
    for (place, text) in [
        ("the operator's trace log", &log),
        ("the events", &events),
        ("the ReferralSystem status", &status),
        ("the children", &children),
    ] {
        for needle in needles {
            assert!(!text.contains(needle.as_str()), "a password ({} chars) found in {place}", needle.len());
        }
    }
}

#[tokio::test]
async fn a_managed_redis_gets_a_generated_password_kept_rotated_on_request_and_never_shown() {
    if !crate::harness::enabled() {
        return;
    }
    let fx = Fixture::start("genpw", None, &[]).await;
    let created = fx.create_system("minimal.yaml", RedisKind::Managed).await;
    let secret_name = format!("{SYSTEM}-redis-password");
    let (first, version) = wait_for(CONVERGE, "the generated password Secret", || async {
        secret_value(&fx, &secret_name, "password").await
    })
    .await;
    assert_eq!(first.len(), 64, "256 random bits as hex");
    assert!(first.iter().all(u8::is_ascii_hexdigit));
    let secret = Api::<Secret>::namespaced(fx.client.clone(), &fx.ns.name).get(&secret_name).await.unwrap();
    let owner = &secret.metadata.owner_references.as_ref().expect("owned by the system")[0];
    assert_eq!((owner.kind.as_str(), Some(owner.uid.as_str())), ("ReferralSystem", created.metadata.uid.as_deref()));
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"], "referral-operator");
    // Redis and the workers use it, by reference.
    let redis = wait_for(CONVERGE, "the Redis StatefulSet", || async {
        Api::<StatefulSet>::namespaced(fx.client.clone(), &fx.ns.name).get_opt(&format!("{SYSTEM}-redis")).await.ok()?
    })
    .await;
    let volumes = redis.spec.unwrap().template.spec.unwrap().volumes.unwrap();
    let password_volume = volumes.iter().find(|v| v.name == "password").expect("the password volume");
    assert_eq!(password_volume.secret.as_ref().unwrap().secret_name.as_deref(), Some(secret_name.as_str()));
    let hash_before = wait_for(CONVERGE, "the worker's secrets hash", || async {
        secrets_hash(&fx, &format!("{SYSTEM}-reward-processor")).await
    })
    .await;

    // Kept: more reconciles write nothing to it.
    fx.more_reconciles(3).await;
    assert_eq!(secret_value(&fx, &secret_name, "password").await, Some((first.clone(), version.clone())));

    // Rotated once per request.
    let token = "2026-12-06T10:00:00Z";
    fx.systems
        .patch(
            SYSTEM,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"referral.dev/rotate-redis-password": token}}})),
        )
        .await
        .unwrap();
    let (second, second_version) = wait_for(CONVERGE, "a new password", || async {
        secret_value(&fx, &secret_name, "password").await.filter(|(v, _)| *v != first)
    })
    .await;
    assert_eq!(second.len(), 64);
    wait_for(CONVERGE, "the rotation recorded in status", || async {
        let handled = fx.systems.get(SYSTEM).await.ok()?.status?.handled_requests?.rotate_redis_password?;
        (handled.token == token).then_some(())
    })
    .await;
    wait_for(CONVERGE, "the workers to roll with the new password", || async {
        let hash = secrets_hash(&fx, &format!("{SYSTEM}-reward-processor")).await?;
        (hash != hash_before).then_some(())
    })
    .await;
    fx.more_reconciles(3).await;
    assert_eq!(
        secret_value(&fx, &secret_name, "password").await,
        Some((second.clone(), second_version)),
        "the same request does not rotate twice"
    );
    assert!(events(&fx.ns.name).contains("RedisPasswordRotated"), "an event says it was rotated");

    let mut needles = Vec::new();
    for password in [&first, &second] {
        let text = String::from_utf8(password.clone()).unwrap();
        needles.push(base64(password));
        needles.push(text);
    }
    assert_never_shown(&fx, &needles).await;
}

#[tokio::test]
async fn an_empty_password_is_refused_naming_the_secret_and_key() {
    if !crate::harness::enabled() {
        return;
    }
    let fx = Fixture::start("emptypw", None, &[("referral-redis", &[("password", "")])]).await;
    let mut system = example_system("minimal.yaml", &fx.ns.name, RedisKind::External);
    system.spec.redis.password_secret_ref =
        Some(referral_operator::crd::SecretKeyRef { name: "referral-redis".into(), key: "password".into() });
    fx.systems.create(&PostParams::default(), &system).await.unwrap();
    let observed = fx.observed().await;
    let ready = condition_of(&observed, "Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "SecretMissing"));
    assert!(ready.message.contains("Secret referral-redis key password is empty"), "{}", ready.message);
    let redis = condition_of(&observed, "RedisReady");
    assert_eq!(redis.reason, "SecretMissing", "Redis is not asked with an empty password: {}", redis.message);
}

/// redis-server with TLS (the PKI's server certificate) and the ACL user `referral`,
/// its configuration on stdin so the password is on no command line.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl TlsRedis {
    fn start(pki: &TestPki, password: &str) -> TlsRedis {
        let (child, port) = certs::start_redis_server_with_config("the TLS redis-server", |port| {
            format!(
                "port 0\ntls-port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients optional\nuser default off\nuser referral on >{password} ~* &* +@all\n",
                pki.server_cert.display(),
                pki.server_key.display(),
                pki.ca_cert.display()
            )
        });
        TlsRedis { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn redis_and_mongodb_are_probed_over_tls_with_the_ca_and_client_certificate() {
    if !crate::harness::enabled() {
        return;
    }
    let pki = certs::make();
    let password = format!("tlscanary{}x{}", suffix(), suffix());
    let redis = TlsRedis::start(&pki, &password);
    let backend =
        testbed_var("REFOP_TEST_MONGODB_URI").trim_start_matches("mongodb://").trim_end_matches('/').to_string();
    let tunnel = Stunnel::start(&pki, &backend, true);
    let ca = String::from_utf8(TestPki::read(&pki.ca_cert)).unwrap();
    let client_cert = String::from_utf8(TestPki::read(&pki.client_cert)).unwrap();
    let client_key = String::from_utf8(TestPki::read(&pki.client_key)).unwrap();
    let mongo_uri = format!("mongodb://127.0.0.1:{}/", tunnel.port);
    let fx = Fixture::start(
        "tls",
        Some(&mongo_uri),
        &[
            ("db-ca", &[("ca.crt", ca.as_str())]),
            ("mongo-client", &[("tls.crt", client_cert.as_str()), ("tls.key", client_key.as_str())]),
            ("referral-redis", &[("password", password.as_str())]),
        ],
    )
    .await;
    let mut system = example_system("minimal.yaml", &fx.ns.name, RedisKind::External);
    system.spec.mongodb = serde_json::from_value(json!({
        "uriSecretRef": {"name": "referral-mongo", "key": "uri"}, "database": "e2e",
        "tls": {"caSecretRef": {"name": "db-ca", "key": "ca.crt"}, "clientCertificateSecretName": "mongo-client"}
    }))
    .unwrap();
    system.spec.redis = serde_json::from_value(json!({
        "external": {"host": "127.0.0.1", "port": redis.port, "tls": true},
        "tls": {"caSecretRef": {"name": "db-ca", "key": "ca.crt"}},
        "username": "referral",
        "passwordSecretRef": {"name": "referral-redis", "key": "password"},
        "keyPrefix": "ref:"
    }))
    .unwrap();
    fx.systems.create(&PostParams::default(), &system).await.unwrap();
    let observed = wait_for(CONVERGE, "both probes to answer over TLS", || async {
        let system = fx.systems.get(SYSTEM).await.ok()?;
        let conditions = &system.status.as_ref()?.conditions;
        let redis = condition(conditions, "RedisReady")?;
        let mongo = condition(conditions, "MongoReachable")?;
        (redis.status == "True" && mongo.status == "True").then_some(system)
    })
    .await;
    let redis_ready = condition_of(&observed, "RedisReady");
    assert!(redis_ready.message.contains("over TLS, after AUTH"), "{}", redis_ready.message);

    // The workers get the CA as a file and the paths in their environment.
    let children = fx.children().await;
    let worker = &children[&format!("Deployment/{SYSTEM}-reward-processor")];
    let pod = &worker.data["spec"]["template"]["spec"];
    assert!(pod["volumes"].as_array().unwrap().iter().any(|v| v["name"] == "mongodb-tls"));
    assert!(pod["containers"][0]["env"].as_array().unwrap().iter().any(|e| e["name"] == "REDIS_TLS_CA_FILE"));

    // A CA that did not sign the servers' certificates: both say so.
    let other = String::from_utf8(TestPki::read(&pki.other_ca_cert)).unwrap();
    put_secret(&fx.client, &fx.ns.name, "db-ca", &[("ca.crt", other.as_str())]).await;
    let failed = wait_for(CONVERGE, "the probes to fail against the other CA", || async {
        let system = fx.systems.get(SYSTEM).await.ok()?;
        let conditions = &system.status.as_ref()?.conditions;
        let redis = condition(conditions, "RedisReady")?;
        let mongo = condition(conditions, "MongoReachable")?;
        (redis.status == "False" && mongo.status == "False").then_some(system)
    })
    .await;
    let redis_failed = condition_of(&failed, "RedisReady");
    assert_eq!(redis_failed.reason, "TLSHandshakeFailed", "{}", redis_failed.message);
    assert!(condition_of(&failed, "MongoReachable").message.to_lowercase().contains("certificate"));
    assert_never_shown(&fx, &[password.clone(), base64(password.as_bytes())]).await;
}

/// A Ready node, when the bed has one (tests/e2e/TESTBED.md: the control plane alone
/// has none; issue 16 adds kubelet, scheduler and containerd).
async fn ready_node(fx: &Fixture) -> Option<Node> {
    let nodes = Api::<Node>::all(fx.client.clone()).list(&ListParams::default()).await.ok()?;
    nodes.items.into_iter().find(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
}

#[tokio::test]
async fn the_scheduler_honours_placement_on_a_real_node() {
    if !crate::harness::enabled() {
        return;
    }
    let fx = Fixture::start("placement", None, &[]).await;
    let Some(node) = ready_node(&fx).await else {
        eprintln!(
            "SKIPPED: placement honoured by the scheduler needs a node with a kubelet and kube-scheduler in the test \
             bed (issue 16); this bed is a control plane only"
        );
        return;
    };
    let hostname = node.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/hostname")).cloned().unwrap();
    let mut system = example_system("minimal.yaml", &fx.ns.name, RedisKind::External);
    system.spec.pods = Some(
        serde_json::from_value(json!({
            "nodeSelector": {"kubernetes.io/hostname": hostname},
            "tolerations": [{"operator": "Exists"}],
            "labels": {"cost-center": "growth"}
        }))
        .unwrap(),
    );
    system.spec.workers = serde_json::from_value(json!([
        {"name": "reward-processor", "replicas": 2},
        {"name": "nowhere", "replicas": 1, "pods": {"nodeSelector": {"referral.dev/e2e-no-such-node": "true"}}}
    ]))
    .unwrap();
    fx.systems.create(&PostParams::default(), &system).await.unwrap();
    let pods = Api::<Pod>::namespaced(fx.client.clone(), &fx.ns.name);
    let scheduled = wait_for(Duration::from_secs(120), "the worker's pods on the selected node", || async {
        let list = pods.list(&ListParams::default().labels("referral.dev/worker=reward-processor")).await.ok()?;
        let on_node: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(hostname.as_str()))
            .collect();
        (on_node.len() == 2).then_some(on_node)
    })
    .await;
    for pod in &scheduled {
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["cost-center"], "growth");
    }
    // A selector no node matches: the scheduler leaves the pod unscheduled and says why.
    let reason = wait_for(Duration::from_secs(120), "the scheduler to refuse the unplaceable pod", || async {
        let list = pods.list(&ListParams::default().labels("referral.dev/worker=nowhere")).await.ok()?;
        let pod = list.items.into_iter().next()?;
        let scheduled = pod.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        (scheduled.status == "False").then_some(scheduled.message.unwrap_or_default())
    })
    .await;
    assert!(reason.contains("node affinity") || reason.contains("selector"), "{reason}");
}

/// The operator's value of `metric` for this system with `extra` labels, from its
/// own /metrics.
fn operator_gauge(fx: &Fixture, metric: &str, extra: &str) -> Option<f64> {
    let (_, text, _) = crate::chart::http_get(fx.operator.listen, "/metrics");
    let prefix = format!("{metric}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&format!("referral_namespace=\"{}\"", fx.ns.name)))
        .find(|l| extra.is_empty() || l.contains(extra))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn failed_scheduled_runs_are_reported_with_their_reason_an_event_and_a_metric() {
    if !crate::harness::enabled() {
        return;
    }
    // On the node the maintenance Job runs the stand-in worker for real: a connection
    // to a closed port fails, then the fixed command succeeds. Elsewhere the test plays
    // the kubelet. The chain check's Job dying before it reports is played only where
    // no kubelet runs its pod: on the node it would run (unit tests in
    // controller::scheduled cover that path there). `args` follow the image's
    // entrypoint (the stand-in's is `/worker`).
    let on_node = crate::harness::node().is_some();
    let failing = if on_node { json!(["connect", "127.0.0.1:1"]) } else { json!(["npm", "run", "cleanup"]) };
    let fixed = if on_node { json!(["job", "cleanup"]) } else { failing.clone() };
    let fx = Fixture::start("maint", None, &[]).await;
    let mut system = example_system("minimal.yaml", &fx.ns.name, RedisKind::External);
    system.spec.maintenance =
        serde_json::from_value(json!([{"name": "cleanup", "schedule": "* * * * *", "args": failing}])).unwrap();
    if !on_node {
        system.spec.chain_check.schedule = "* * * * *".into();
    }
    fx.systems.create(&PostParams::default(), &system).await.unwrap();
    // Ready first, so that what follows can be seen not to block it.
    fx.make_ready().await;
    // The CronJob controller starts them at the next minute.
    let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(fx.client.clone(), &fx.ns.name);
    let (cleanup, check) = wait_for(Duration::from_secs(150), "the first scheduled Jobs", || async {
        let list = jobs.list(&ListParams::default()).await.ok()?;
        let named =
            |prefix: &str| list.items.iter().filter_map(|j| j.metadata.name.clone()).find(|n| n.starts_with(prefix));
        let check = if on_node { None } else { Some(named(&format!("{SYSTEM}-chain-check-"))?) };
        Some((named(&format!("{SYSTEM}-maint-cleanup-"))?, check))
    })
    .await;
    // No more runs after these: what is judged is these.
    fx.patch_spec(json!({"maintenance": [{"name": "cleanup", "schedule": "* * * * *", "suspend": true,
        "args": failing}], "chainCheck": {"suspend": true}}))
        .await;
    if !on_node {
        for job in [Some(&cleanup), check.as_ref()].into_iter().flatten() {
            crate::controller_jobs::fail_job_pod(&fx.client, &fx.ns.name, job, "no route to MongoDB").await;
        }
    }
    let observed = wait_for(Duration::from_secs(180), "the failed runs in status", || async {
        let system = fx.systems.get(SYSTEM).await.ok()?;
        let status = system.status.as_ref()?;
        let run = status.maintenance.first()?;
        let failed = run.last_result == Some(referral_operator::crd::status::RunResult::Failed);
        let check_failed = on_node || condition(&status.conditions, "ChainIntegrity")?.reason == "CheckJobFailed";
        (failed && check_failed).then_some(system)
    })
    .await;
    let status = observed.status.as_ref().unwrap();
    let run = &status.maintenance[0];
    assert_eq!(run.cron_job, format!("{SYSTEM}-maint-cleanup"));
    let message = run.message.clone().unwrap_or_default();
    assert!(message.contains(&cleanup) && message.contains("BackoffLimitExceeded"), "{message}");
    if let Some(check) = &check {
        let chain = condition_of(&observed, "ChainIntegrity");
        assert!(chain.message.contains(check.as_str()), "{}", chain.message);
    }
    assert_eq!(condition_of(&observed, "Ready").status, "True", "a failed run does not block Ready");
    wait_for(CONVERGE, "the gauges the alerts read", || async {
        let maintenance = operator_gauge(&fx, "referral_operator_maintenance_job_failed", "job=\"cleanup\"")?;
        let chain = operator_gauge(&fx, "referral_operator_chain_check_failed", "")?;
        (maintenance == 1.0 && (on_node || chain == 1.0)).then_some(())
    })
    .await;
    // The reconcile publishes this event after its status write and after it exports
    // the gauges, so both can be seen before the event exists: wait for it. And
    // `events` lists the core API, then events.k8s.io (two views of the same events):
    // a list that straddles the event's creation shows it in the second view only, so
    // the count is taken once the first view has it too (then the second has it too).
    let seen = wait_for(CONVERGE, "a Warning event MaintenanceJobFailed in both event APIs", || async {
        let (core, new) = event_lists(&fx.ns.name);
        core.contains("MaintenanceJobFailed").then(|| format!("{core}{new}"))
    })
    .await;
    let told = seen.matches("MaintenanceJobFailed").count();
    fx.more_reconciles(3).await;
    assert_eq!(events(&fx.ns.name).matches("MaintenanceJobFailed").count(), told, "each failure is told once");

    // As the runbook says: fix the cause, then run it by hand from the CronJob; the
    // CronJob counts that run and the failure clears.
    fx.patch_spec(json!({"maintenance": [{"name": "cleanup", "schedule": "* * * * *", "suspend": true,
        "args": fixed}]}))
        .await;
    let cron_jobs = Api::<k8s_openapi::api::batch::v1::CronJob>::namespaced(fx.client.clone(), &fx.ns.name);
    wait_for(CONVERGE, "the fixed command in the CronJob", || async {
        let cron = cron_jobs.get(&format!("{SYSTEM}-maint-cleanup")).await.ok()?;
        let container = cron.spec?.job_template.spec?.template.spec?.containers.into_iter().next()?;
        (serde_json::to_value(container.args).ok()? == fixed).then_some(())
    })
    .await;
    let manual = format!("{SYSTEM}-maint-cleanup-manual");
    let (ok, _, err) = kubectl(
        &["create", "job", "-n", &fx.ns.name, &format!("--from=cronjob/{SYSTEM}-maint-cleanup"), &manual],
        None,
    );
    assert!(ok, "{err}");
    if !on_node {
        crate::backup::succeed_job(&fx.client, &fx.ns.name, &manual).await;
    }
    wait_for(Duration::from_secs(120), "the manual run to clear the failure", || async {
        let status = fx.systems.get(SYSTEM).await.ok()?.status?;
        let run = status.maintenance.first()?;
        (run.last_result == Some(referral_operator::crd::status::RunResult::Succeeded)).then_some(())
    })
    .await;
    wait_for(CONVERGE, "the gauge back at 0", || async {
        (operator_gauge(&fx, "referral_operator_maintenance_job_failed", "job=\"cleanup\"")? == 0.0).then_some(())
    })
    .await;
}
