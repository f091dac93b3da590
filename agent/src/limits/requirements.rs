//! What a container needs, and whether it gets it: the built-in `elasticsearch` profile for
//! containers whose command line runs Elasticsearch, and the pod annotations
//! `volpool.io/require-{memlock,nofile,nproc,max-map-count}` for any workload (an annotation
//! overrides the profile for its resource). Each result that is not met says how to fix it.
//!
//! ```text
//!  ContainerFacts + NodeFacts ─► needs (profile, annotations) ─► [RequirementResult { met, message }]
//! ```

use std::collections::BTreeMap;

use volpool_api::{
    ANNOTATION_REQUIRE_MAX_MAP_COUNT, ANNOTATION_REQUIRE_MEMLOCK, ANNOTATION_REQUIRE_NOFILE,
    ANNOTATION_REQUIRE_NPROC,
};

use super::facts::{ContainerFacts, NodeFacts, RequirementResult};

/// Elasticsearch's bootstrap checks: nofile ≥ 65535, nproc ≥ 4096, vm.max_map_count ≥ 262144,
/// and memlock unlimited when `bootstrap.memory_lock` is on.
pub const PROFILE_ELASTICSEARCH: &str = "elasticsearch";
const ES_NOFILE: u64 = 65_535;
const ES_NPROC: u64 = 4_096;
const ES_MAX_MAP_COUNT: u64 = 262_144;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Resource {
    Memlock,
    Nofile,
    Nproc,
    MaxMapCount,
}

impl Resource {
    const ALL: [(Resource, &'static str); 4] = [
        (Resource::Memlock, ANNOTATION_REQUIRE_MEMLOCK),
        (Resource::Nofile, ANNOTATION_REQUIRE_NOFILE),
        (Resource::Nproc, ANNOTATION_REQUIRE_NPROC),
        (Resource::MaxMapCount, ANNOTATION_REQUIRE_MAX_MAP_COUNT),
    ];

    fn name(self) -> &'static str {
        match self {
            Resource::Memlock => "memlock",
            Resource::Nofile => "nofile",
            Resource::Nproc => "nproc",
            Resource::MaxMapCount => "max-map-count",
        }
    }
}

/// At least this much; `None` is unlimited. `Err` holds an annotation that cannot be read.
type Need = (String, Result<Option<u64>, String>);

/// Check every requirement that applies to `container` on `node`.
pub fn check(container: &ContainerFacts, node: &NodeFacts) -> Vec<RequirementResult> {
    let mut needs: BTreeMap<Resource, Need> = BTreeMap::new();
    if container.elasticsearch {
        let profile = || PROFILE_ELASTICSEARCH.to_string();
        if container.memory_lock_requested {
            needs.insert(Resource::Memlock, (profile(), Ok(None)));
        }
        needs.insert(Resource::Nofile, (profile(), Ok(Some(ES_NOFILE))));
        needs.insert(Resource::Nproc, (profile(), Ok(Some(ES_NPROC))));
        needs.insert(
            Resource::MaxMapCount,
            (profile(), Ok(Some(ES_MAX_MAP_COUNT))),
        );
    }
    for (resource, key) in Resource::ALL {
        if let Some(value) = container.annotations.get(key) {
            needs.insert(resource, (key.to_string(), parse_need(resource, value)));
        }
    }
    needs
        .into_iter()
        .map(|(resource, (source, need))| evaluate(resource, source, need, container, node))
        .collect()
}

fn parse_need(resource: Resource, value: &str) -> Result<Option<u64>, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("unlimited") && resource != Resource::MaxMapCount {
        return Ok(None);
    }
    let parsed = match resource {
        Resource::Memlock => volpool_api::units::parse_bytes(value).ok(),
        _ => value.parse().ok(),
    };
    parsed.map(Some).ok_or_else(|| {
        let expected = match resource {
            Resource::Memlock => "`unlimited` or a size such as 64Mi",
            Resource::MaxMapCount => "a number such as 262144",
            _ => "`unlimited` or a number",
        };
        format!("{value:?} is not {expected}")
    })
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "unlimited".into(), |v| v.to_string())
}

fn evaluate(
    resource: Resource,
    source: String,
    need: Result<Option<u64>, String>,
    container: &ContainerFacts,
    node: &NodeFacts,
) -> RequirementResult {
    let actual = match resource {
        Resource::Memlock => Some(container.memlock.soft),
        Resource::Nofile => Some(container.nofile.soft),
        Resource::Nproc => Some(container.nproc.soft),
        Resource::MaxMapCount => node.vm_max_map_count.map(Some),
    };
    let mut result = RequirementResult {
        requirement: resource.name().into(),
        source,
        required: String::new(),
        actual: actual.map_or_else(|| "unknown".into(), show),
        met: false,
        message: String::new(),
    };
    let need = match need {
        Ok(need) => need,
        Err(why) => {
            result.required = "invalid".into();
            result.message = format!(
                "annotation {}: {why}; fix the annotation on the pod",
                result.source
            );
            return result;
        }
    };
    result.required = show(need);
    result.met = match (need, actual) {
        (_, None) => false,
        (_, Some(None)) => true,
        (None, Some(Some(_))) => false,
        (Some(min), Some(Some(have))) => have >= min,
    };
    if !result.met {
        result.message = fix(resource, &result, need, node);
    }
    result
}

/// What is wrong and what to do, naming the runtime's systemd unit when it is known.
fn fix(
    resource: Resource,
    result: &RequirementResult,
    need: Option<u64>,
    node: &NodeFacts,
) -> String {
    let what = format!(
        "{} is {} but {} needs {}",
        match resource {
            Resource::MaxMapCount => "vm.max_map_count",
            _ => result.requirement.as_str(),
        },
        result.actual,
        result.source,
        result.required
    );
    let (directive, value) = match resource {
        Resource::MaxMapCount => {
            let value = need.unwrap_or(ES_MAX_MAP_COUNT);
            return format!(
                "{what}: run `sysctl -w vm.max_map_count={value}` on the node and persist it with `echo vm.max_map_count={value} > /etc/sysctl.d/99-volpool.conf`"
            );
        }
        Resource::Memlock => ("LimitMEMLOCK", "infinity".to_string()),
        Resource::Nofile => (
            "LimitNOFILE",
            need.unwrap_or(1_048_576).max(1_048_576).to_string(),
        ),
        Resource::Nproc => ("LimitNPROC", "infinity".to_string()),
    };
    let unit = match node.runtime.as_ref().map(|r| r.name.as_str()) {
        Some("containerd") => "containerd.service",
        Some("crio") => "crio.service",
        Some("dockerd") => "docker.service",
        _ => "<runtime>.service",
    };
    format!(
        "{what}: containers inherit the container runtime's limits (Kubernetes has no ulimit field); add a systemd drop-in /etc/systemd/system/{unit}.d/volpool-limits.conf with `[Service]` and `{directive}={value}`, run `systemctl daemon-reload && systemctl restart {unit}`, then recreate the pod"
    )
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::super::RuntimeFacts;
    use super::super::procfs::Limit;
    use super::*;

    fn limit(soft: Option<u64>) -> Limit {
        Limit { soft, hard: soft }
    }

    fn node(max_map_count: u64) -> NodeFacts {
        NodeFacts {
            vm_max_map_count: Some(max_map_count),
            runtime: Some(RuntimeFacts {
                name: "containerd".into(),
                pid: 1,
                memlock: limit(Some(8 << 20)),
                nofile: limit(Some(1 << 20)),
                nproc: limit(None),
            }),
            ..NodeFacts::default()
        }
    }

    fn elasticsearch(memlock: Option<u64>) -> ContainerFacts {
        ContainerFacts {
            memlock: limit(memlock),
            nofile: limit(Some(65_536)),
            nproc: limit(None),
            elasticsearch: true,
            memory_lock_requested: true,
            ..ContainerFacts::default()
        }
    }

    fn by_name<'a>(results: &'a [RequirementResult], name: &str) -> &'a RequirementResult {
        results
            .iter()
            .find(|r| r.requirement == name)
            .unwrap_or_else(|| panic!("no {name} in {results:?}"))
    }

    #[test]
    fn elasticsearch_with_64k_memlock_is_told_to_raise_the_runtime_limit() {
        let results = check(&elasticsearch(Some(65_536)), &node(262_144));
        let memlock = by_name(&results, "memlock");
        assert!(!memlock.met);
        assert_eq!(memlock.required, "unlimited");
        assert_eq!(memlock.actual, "65536");
        assert!(
            memlock.message.contains("LimitMEMLOCK=infinity")
                && memlock.message.contains("containerd.service"),
            "{}",
            memlock.message
        );
        for name in ["nofile", "nproc", "max-map-count"] {
            assert!(by_name(&results, name).met, "{name}: {results:?}");
        }
    }

    #[test]
    fn elasticsearch_without_memory_lock_needs_no_memlock() {
        let mut es = elasticsearch(Some(65_536));
        es.memory_lock_requested = false;
        let results = check(&es, &node(65_530));
        assert!(results.iter().all(|r| r.requirement != "memlock"));
        let sysctl = by_name(&results, "max-map-count");
        assert!(!sysctl.met);
        assert!(
            sysctl.message.contains("sysctl -w vm.max_map_count=262144")
                && sysctl.message.contains("/etc/sysctl.d/"),
            "{}",
            sysctl.message
        );
    }

    #[test]
    fn annotations_apply_to_any_workload_and_override_the_profile() {
        let mut app = ContainerFacts {
            memlock: limit(Some(8 << 20)),
            nofile: limit(Some(1024)),
            nproc: limit(Some(100)),
            ..ContainerFacts::default()
        };
        assert!(
            check(&app, &node(65_530)).is_empty(),
            "no profile, no annotations"
        );
        for (key, value) in [
            (ANNOTATION_REQUIRE_MEMLOCK, "4Mi"),
            (ANNOTATION_REQUIRE_NOFILE, "4096"),
            (ANNOTATION_REQUIRE_NPROC, "unlimited"),
            (ANNOTATION_REQUIRE_MAX_MAP_COUNT, "many"),
        ] {
            app.annotations.insert(key.into(), value.into());
        }
        let results = check(&app, &node(65_530));
        assert!(by_name(&results, "memlock").met);
        let nofile = by_name(&results, "nofile");
        assert!(!nofile.met && nofile.message.contains("LimitNOFILE=1048576"));
        assert_eq!(nofile.source, ANNOTATION_REQUIRE_NOFILE);
        assert!(
            by_name(&results, "nproc")
                .message
                .contains("LimitNPROC=infinity")
        );
        let bad = by_name(&results, "max-map-count");
        assert!(
            !bad.met && bad.message.contains("\"many\" is not a number"),
            "{bad:?}"
        );

        let mut es = elasticsearch(Some(65_536));
        es.annotations
            .insert(ANNOTATION_REQUIRE_MEMLOCK.into(), "64Ki".into());
        let memlock = by_name(&check(&es, &node(262_144)), "memlock").clone();
        assert!(memlock.met, "{memlock:?}");
    }
}
