//! The chaos soak (`tests/chaos/run`): the real control plane, agents on fake nodes with
//! loop-backed disks, an NFS pool on nfs-ganesha and two controller replicas, under a steady
//! load, while faults drawn from a seed land one or two at a time. After every fault the
//! invariants are checked, and again once the system has settled. Steps are drawn while the
//! asked minutes last (the seed fixes their order, the clock how many run).
//!
//! ```text
//!  seed ──► schedule ──► next step while time remains: load … inject ─ hold (load goes on) ─ recover
//!                            └─► safety checks ─► settle ─► settled checks ─► idle pass
//!  end ──► final settle and checks ──► how long it ran, faults by kind
//!      ──► `chaos: <F> faults, <C> invariant checks, <V> violations`
//! ```

pub mod bed;
pub mod check;
pub mod control_plane;
pub mod disk;
pub mod fault;
pub mod inject;
pub mod load;
pub mod logs;
pub mod marks;
pub mod rng;
pub mod settle;
pub mod world;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bed::{Bed, DISKS};
use check::Violation;
use fault::{Schedule, Scope, Step};
use load::Load;
use logs::Logs;
use marks::Marks;
use world::World;

use crate::agent::agent_log;

/// How long the system may take to settle after a fault.
const SETTLE: Duration = Duration::from_secs(180);
/// How long after settling the settled invariants may take to hold.
const CONVERGE: Duration = Duration::from_secs(30);
/// How long the system may take to go quiet before an idle pass.
const QUIET_WITHIN: Duration = Duration::from_secs(90);

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Minutes of faults (the set-up and the final settle come on top).
    pub minutes: f64,
    /// The seed of the schedule and the load.
    pub seed: u64,
    /// Fake nodes.
    pub nodes: usize,
}

/// The totals of a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Faults injected.
    pub faults: u64,
    /// Invariant checks made.
    pub checks: u64,
    /// Violations found.
    pub violations: u64,
}

/// Per fault kind: how often, and what volpool did.
#[derive(Default)]
struct KindStats {
    count: u32,
    settle: Vec<f64>,
    effects: BTreeMap<String, u32>,
}

struct Run {
    opts: Options,
    bed: Bed,
    load: Load,
    marks: Marks,
    logs: Logs,
    edits: u32,
    done: Vec<String>,
    summary: Summary,
    kinds: BTreeMap<&'static str, KindStats>,
    started: Instant,
    /// When the first step began, and how long the steps took once the last one ended.
    faulting: Option<(Instant, Option<Duration>)>,
}

/// Run the soak; the summary's `violations` says whether it passed.
pub async fn run(opts: Options) -> anyhow::Result<Summary> {
    println!(
        "chaos: seed {} for {} minutes, {} nodes with {} disks each",
        opts.seed,
        opts.minutes,
        opts.nodes,
        DISKS.len()
    );
    let bed = tokio::select! {
        bed = Bed::up(opts.nodes) => bed?,
        signal = interrupted() => anyhow::bail!("interrupted by {signal} during the set-up"),
    };
    let scope = Scope {
        nodes: opts.nodes,
        disks: DISKS.len(),
        control_plane: bed.control_plane.is_some(),
    };
    match &bed.control_plane {
        Some(plane) => println!("chaos: control plane in {}", plane.dir().display()),
        None => println!(
            "chaos: the cluster was not made by tests/cluster/up: etcd and the apiserver are not killed"
        ),
    }
    println!(
        "chaos: faults drawn from the seed while the {} minutes last (`chaos --print-schedule N --seed {}` prints the first N)",
        opts.minutes, opts.seed
    );
    let schedule = Schedule::new(opts.seed, scope);
    let mut run = Run {
        load: Load::new(opts.seed),
        opts,
        bed,
        marks: Marks::default(),
        logs: Logs::default(),
        edits: 0,
        done: Vec::new(),
        summary: Summary::default(),
        kinds: BTreeMap::new(),
        started: Instant::now(),
        faulting: None,
    };
    let result = tokio::select! {
        r = run.soak(schedule) => r,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    // NB: a soak that cannot go on (a recovery failed, a signal) fails, with what it counted.
    if let Err(e) = result {
        println!("chaos: the soak stopped early: {e:#}");
        run.summary.violations += 1;
    }
    run.print_kinds();
    let Run { bed, summary, .. } = run;
    bed.down().await;
    Ok(summary)
}

/// The first SIGINT or SIGTERM (the soak then tears its world down before it exits).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

impl Run {
    /// Steps from `schedule` while the minutes last: a step starts only before the end, and
    /// runs to its end (its hold, recovery and settle), so the faults last the minutes asked
    /// plus at most one step.
    async fn soak(&mut self, mut schedule: Schedule) -> anyhow::Result<()> {
        self.settle_and_check("set-up").await?;
        println!(
            "chaos: t+{}s set up and settled",
            self.started.elapsed().as_secs()
        );
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(self.opts.minutes * 60.0);
        self.faulting = Some((start, None));
        while Instant::now() < end {
            let Some(step) = schedule.next() else { break };
            self.step(&step).await?;
        }
        self.faulting = Some((start, Some(start.elapsed())));
        println!("chaos: faults over; final settle");
        self.settle_and_check("final").await
    }

    async fn step(&mut self, step: &Step) -> anyhow::Result<()> {
        for _ in 0..2 {
            self.load_step().await;
        }
        let before = World::observe(&self.bed).await?;
        let at = self.started.elapsed().as_secs();
        self.done.push(format!("t+{at}s {step}"));
        println!("chaos: t+{at}s step {}: inject {step}", self.done.len());
        let mut undo = Vec::new();
        for fault in &step.faults {
            self.summary.faults += 1;
            self.kinds.entry(fault.kind()).or_default().count += 1;
            match inject::inject(
                &mut self.bed,
                fault,
                &mut self.marks,
                &mut self.logs,
                &mut self.edits,
            )
            .await
            {
                Ok(u) => undo.push(u),
                Err(e) => println!("chaos: could not inject {fault}: {e:#}"),
            }
        }
        let hold_end = Instant::now() + step.hold;
        while Instant::now() < hold_end {
            self.load_step().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // The safety invariants hold during the fault too (when the apiserver answers).
        let during = format!("{step}, while it lasted");
        if let Ok(world) = World::observe(&self.bed).await {
            match tokio::time::timeout(world::LOOK, self.safety(&world, &during)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => println!("chaos: the check during {step} could not finish: {e:#}"),
                Err(_) => println!("chaos: the check during {step} got no answer in time"),
            }
        }
        let mut failed = None;
        for u in undo.into_iter().rev() {
            if let Err(e) = inject::recover(&mut self.bed, u).await {
                println!("chaos: recovery failed: {e:#}");
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            return Err(e.context(format!("recovering from {step}")));
        }
        inject::wait_for_apiserver(&self.bed).await?;
        let t = Instant::now();
        self.settle_and_check(&step.to_string()).await?;
        let settled = t.elapsed().as_secs_f64();
        let after = World::observe(&self.bed).await?;
        let effects = effects(&before, &after);
        println!(
            "chaos: {step}: settled and checked in {settled:.0}s; PVs: {}",
            effects.join(", ")
        );
        for fault in &step.faults {
            let stats = self.kinds.entry(fault.kind()).or_default();
            stats.settle.push(settled);
            for e in &effects {
                *stats.effects.entry(e.clone()).or_default() += 1;
            }
        }
        Ok(())
    }

    /// One load action, then marks for what it bound or freed.
    async fn load_step(&mut self) {
        let t = Instant::now();
        let kind = tokio::time::timeout(world::LOOK, self.load.step(&self.bed))
            .await
            .unwrap_or("no answer");
        println!(
            "chaos: t+{}s load: {kind} ({:.1}s)",
            self.started.elapsed().as_secs(),
            t.elapsed().as_secs_f64()
        );
        if let Ok(world) = World::observe(&self.bed).await
            && let Err(e) = self.marks.refresh(&self.bed, &world)
        {
            println!("chaos: writing marks: {e:#}");
        }
    }

    /// Safety checks now; wait to settle; settled checks; the idle pass.
    async fn settle_and_check(&mut self, after: &str) -> anyhow::Result<()> {
        let world = self.observe().await?;
        self.safety(&world, after).await?;
        let deadline = Instant::now() + SETTLE;
        let mut why = None;
        while Instant::now() < deadline {
            match World::observe(&self.bed).await {
                Ok(w) => match settle::unsettled(&self.bed, &w).await {
                    Ok(None) => {
                        why = None;
                        break;
                    }
                    Ok(Some(reason)) => why = Some(reason),
                    Err(e) => why = Some(format!("{e:#}")),
                },
                Err(e) => why = Some(format!("{e:#}")),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if let Some(why) = why {
            self.violate(
                after,
                Violation {
                    invariant: "the system settles after a fault",
                    state: format!("not settled after {SETTLE:?}: {why}"),
                },
            );
            return Ok(());
        }
        let converge_end = Instant::now() + CONVERGE;
        let (world, problems) = loop {
            let world = self.observe().await?;
            let problems = check::settled(&world);
            if problems.is_empty() || Instant::now() > converge_end {
                break (world, problems);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        println!(
            "chaos: t+{}s settled after {after}",
            self.started.elapsed().as_secs()
        );
        self.summary.checks += 3;
        for v in problems {
            self.violate(after, v);
        }
        if let Err(e) = self.marks.refresh(&self.bed, &world) {
            println!("chaos: writing marks: {e:#}");
        }
        self.safety(&world, after).await?;
        self.idle(after).await
    }

    async fn observe(&self) -> anyhow::Result<World> {
        crate::wait_for("a look at the world", SETTLE, || async {
            Ok(Some(World::observe(&self.bed).await?))
        })
        .await
    }

    /// The invariants that hold at every moment, and the logs.
    async fn safety(&mut self, world: &World, after: &str) -> anyhow::Result<()> {
        let mut found = check::safety(world);
        found.extend(self.marks.check(&self.bed, world).await?);
        for node in &self.bed.nodes {
            self.logs.scan(&agent_log(&node.name));
        }
        for replica in self.bed.controllers.iter().flatten() {
            self.logs.scan(&replica.log);
        }
        for line in std::mem::take(&mut self.logs.new) {
            found.push(Violation {
                invariant: check::NO_PANIC,
                state: line,
            });
        }
        self.summary.checks += 6;
        for v in found {
            self.violate(after, v);
        }
        Ok(())
    }

    async fn idle(&mut self, after: &str) -> anyhow::Result<()> {
        self.summary.checks += 1;
        if let Err(changing) = settle::quiet(&self.bed, QUIET_WITHIN).await? {
            self.violate(
                after,
                Violation {
                    invariant: check::IDLE_WRITES_NOTHING,
                    state: changing,
                },
            );
            return Ok(());
        }
        let leader = self.bed.leader().await?.unwrap_or_default();
        let Some(replica) = self
            .bed
            .controllers
            .iter()
            .flatten()
            .find(|c| c.identity == leader)
        else {
            return Ok(());
        };
        let pools_before = world::pools(&self.bed).await?;
        let writes = settle::idle_writes(replica).await?;
        if !writes.is_empty() {
            let pools_after = world::pools(&self.bed).await?;
            let changed = volpool_testkit::json_diff(
                &serde_json::to_value(&pools_before)?,
                &serde_json::to_value(&pools_after)?,
            );
            let state = format!(
                "{} wrote during idle passes: {writes:?}; pools changed: {changed:?}",
                replica.identity
            );
            self.violate(
                after,
                Violation {
                    invariant: check::IDLE_WRITES_NOTHING,
                    state,
                },
            );
        }
        Ok(())
    }

    fn violate(&mut self, after: &str, v: Violation) {
        self.summary.violations += 1;
        println!(
            "chaos: VIOLATION of \"{}\" (checked after {after})",
            v.invariant
        );
        println!(
            "chaos:   seed {} (replay: tests/chaos/run --seed {} --minutes {})",
            self.opts.seed, self.opts.seed, self.opts.minutes
        );
        println!("chaos:   schedule so far:");
        for (i, step) in self.done.iter().enumerate() {
            println!("chaos:     {i:3}. {step}");
        }
        println!("chaos:   state: {}", v.state.replace('\n', "\nchaos:     "));
    }

    /// How long it ran, and the faults of each kind it injected.
    fn print_kinds(&self) {
        let total = self.started.elapsed();
        match self.faulting {
            Some((start, faulting)) => {
                let set_up = start.duration_since(self.started);
                let faults = faulting.unwrap_or_else(|| start.elapsed());
                let rest = total.saturating_sub(set_up + faults);
                let over = if faulting.is_some() {
                    ""
                } else {
                    " (stopped early)"
                };
                println!(
                    "chaos: ran {}: set-up {}, faults for {} of the {} minutes asked{over} in {} steps, final settle {}",
                    minutes(total),
                    minutes(set_up),
                    minutes(faults),
                    self.opts.minutes,
                    self.done.len(),
                    minutes(rest),
                );
            }
            None => println!("chaos: ran {}, all of it setting up", minutes(total)),
        }
        println!(
            "chaos: faults by kind ({} in all; count; settle seconds min/max; what happened to PVs, in how many steps):",
            self.summary.faults
        );
        for (kind, s) in &self.kinds {
            let min = s.settle.iter().copied().fold(f64::INFINITY, f64::min);
            let max = s.settle.iter().copied().fold(0.0, f64::max);
            let settled = if s.settle.is_empty() {
                "not settled".to_string()
            } else {
                format!("settled in {min:.0}–{max:.0}s")
            };
            let effects: Vec<String> = s.effects.iter().map(|(e, n)| format!("{e} ×{n}")).collect();
            println!(
                "chaos:   {kind}: {} time(s); {settled}; {}",
                s.count,
                effects.join(", ")
            );
        }
        println!("chaos: load: {:?}", self.load.done);
        println!(
            "chaos: marks: {} written, {} verified intact",
            self.marks.written, self.marks.verified
        );
    }
}

/// `d` as `<m> min <s> s`, or `<s> s` under a minute.
fn minutes(d: Duration) -> String {
    match d.as_secs() {
        s @ 0..60 => format!("{s} s"),
        s => format!("{} min {} s", s / 60, s % 60),
    }
}

/// What changed in the PVs between two looks: created, deleted, labelled, by pool kind.
fn effects(before: &World, after: &World) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, b, a) in [
        ("local", &before.local, &after.local),
        ("nfs", &before.nfs, &after.nfs),
    ] {
        let uids = |pvs: &[k8s_openapi::api::core::v1::PersistentVolume]| -> BTreeMap<String, Option<String>> {
            pvs.iter()
                .map(|p| {
                    let health = crate::controller::label(p, volpool_api::LABEL_HEALTH).map(String::from);
                    (check::uid(p).to_string(), health)
                })
                .collect()
        };
        let (b, a) = (uids(b), uids(a));
        let created = a.keys().filter(|u| !b.contains_key(*u)).count();
        let deleted = b.keys().filter(|u| !a.contains_key(*u)).count();
        if created > 0 {
            out.push(format!("{kind} +{created}"));
        }
        if deleted > 0 {
            out.push(format!("{kind} -{deleted}"));
        }
        for (u, health) in &a {
            if let Some(h) = health
                .as_ref()
                .filter(|h| b.get(u).and_then(|x| x.as_ref()) != Some(*h))
            {
                out.push(format!("{kind} labelled {h}"));
            }
        }
    }
    if out.is_empty() {
        out.push("unchanged".into());
    }
    out
}
