//! The Secret key cache against the simulated API server.

use lifeboat_volume::KeyCache;
use lifeboat_volume::secret_cache::SecretKeyCache;

#[tokio::test]
async fn the_secret_cache_keeps_the_first_key_and_reads_data_only()
-> Result<(), Box<dyn std::error::Error>> {
    let sandbox = lifeboat_sandbox::Sandbox::start().await?;
    let client = sandbox.client();
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lifeboat"}
    }))?;
    let _ = ns.create(&Default::default(), &namespace).await;
    let cache = SecretKeyCache::new(client.clone(), "lifeboat", "lifeboat-volume-keys");
    assert_eq!(cache.get("primary.prod.shop.g1").await?, None);
    let (a, b) = tokio::join!(
        cache.insert_if_absent("primary.prod.shop.g1", "first"),
        cache.insert_if_absent("primary.prod.shop.g1", "second"),
    );
    let (a, b) = (a?, b?);
    let stored = cache
        .get("primary.prod.shop.g1")
        .await?
        .ok_or("no key stored")?;
    assert!(
        stored == a && stored == b,
        "both writers agree on one key: {a} {b} {stored}"
    );
    cache
        .insert_if_absent("primary.prod.web.g1", "other")
        .await?;
    assert_eq!(
        cache.get("primary.prod.shop.g1").await?.as_deref(),
        Some(stored.as_str())
    );
    cache.put("primary.prod.shop.g1", "reseeded").await?;
    assert_eq!(
        cache.get("primary.prod.shop.g1").await?.as_deref(),
        Some("reseeded")
    );
    assert_eq!(
        cache.get("primary.prod.web.g1").await?.as_deref(),
        Some("other")
    );
    Ok(())
}
