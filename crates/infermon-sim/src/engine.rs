//! The engine task: one Tokio task owns the scheduler and steps the batch; request handlers
//! talk to it through channels (a command channel in, one event channel per request out).
//!
//! Each step: take in new requests, apply the faults in effect, build the batch, wait out its
//! roofline duration (divided by `time_scale`), then hand every produced token to its request's
//! handler and record the telemetry at the step boundary. A handler that has gone away (its
//! receiver dropped) aborts its sequence. No task per token, no lock on the hot path except the
//! vLLM-format histograms (one lock per step, when enabled).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use infermon::contract::value;
use infermon::instruments::{EngineMetrics, EngineSnapshot};
use infermon::request::{InferenceRequest, Queued};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Resolved;
use crate::faults::{Faults, Scenario};
use crate::kv_cache::KvCache;
use crate::roofline::{step_time, StepWork};
use crate::scheduler::{Scheduler, SchedulerLimits, SeqId, SeqSpec, StepPlan, TokenOut};
use crate::telemetry::Lifecycle;
use crate::vllm_format::{CacheInfo, FinishedReason, FinishedRequest, VllmGauges, VllmMetrics};
use crate::vllm_trace::{EngineTimes, VllmSpan, VllmTraces};

/// How far (wall time) the engine may fall behind its simulated schedule and still catch up by
/// running steps back to back; beyond it the schedule restarts from now, so a stalled host
/// does not produce a burst of instant steps afterwards.
const CATCH_UP: Duration = Duration::from_millis(20);
/// How often a stuck engine (nothing schedulable, e.g. under KV pressure) looks again.
const STALL_RECHECK: Duration = Duration::from_millis(10);

/// Tokio's timer fires on millisecond ticks: a shorter step (a high `time_scale`) would end on
/// the next tick and the one after it at once, so tokens would come in pairs.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Sleeps until `deadline` with sub-millisecond precision: the timer for all but the last
/// tick, then a thread sleep on the blocking pool for the rest (never blocking the runtime).
async fn sleep_precisely_until(deadline: Instant) {
    if deadline.saturating_duration_since(Instant::now()) > 2 * TIMER_TICK {
        tokio::time::sleep_until(deadline - TIMER_TICK).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// Why a request ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// Its natural end (the simulated model "emitted EOS").
    Stop,
    /// It reached `max_tokens`.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => value::FINISH_STOP,
            FinishReason::Length => value::FINISH_LENGTH,
        }
    }

    fn vllm(self) -> FinishedReason {
        match self {
            FinishReason::Stop => FinishedReason::Stop,
            FinishReason::Length => FinishedReason::Length,
        }
    }
}

/// Why the engine failed a request after accepting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Injected mid-stream failure.
    MidStream,
    /// The engine shut down.
    Shutdown,
}

impl Failure {
    pub fn error_type(self) -> &'static str {
        match self {
            Failure::MidStream => value::ERROR_MID_STREAM,
            Failure::Shutdown => value::ERROR_SHUTDOWN,
        }
    }
}

/// What a request handler hears from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Token {
        /// 0 for the first output token.
        index: u32,
        /// Prompt tokens served from the prefix cache (known from the first token on).
        cached_tokens: u32,
        /// Set on the last token.
        finish: Option<FinishReason>,
    },
    Failed(Failure),
}

/// A request, validated and admitted by its handler.
#[derive(Debug)]
pub struct Submission {
    pub spec: SeqSpec,
    /// How it ends when it reaches `spec.output_tokens`.
    pub finish_reason: FinishReason,
    /// Fail (injected fault) instead of producing this output token.
    pub fail_at: Option<u32>,
    /// `max_tokens` as vLLM resolves it: the client's, or the context left after the prompt.
    pub max_tokens: u32,
    pub request: InferenceRequest<Queued>,
    pub arrived: SystemTime,
    /// `arrived` on the engine's monotonic clock: no step that serves it starts earlier.
    pub arrived_at: Instant,
    pub queue_position: u64,
    pub events: mpsc::UnboundedSender<Event>,
    /// Set when vLLM-shaped spans are on.
    pub vllm_span: Option<VllmSpan>,
}

pub enum Command {
    Submit(Box<Submission>),
    Shutdown,
}

/// Maps the engine's monotonic clock to wall-clock timestamps and to simulated time.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    start: Instant,
    start_system: SystemTime,
    time_scale: f64,
}

impl SimClock {
    pub fn new(time_scale: f64) -> Self {
        Self {
            start: Instant::now(),
            start_system: SystemTime::now(),
            time_scale,
        }
    }

    /// The wall-clock time of `at` (telemetry timestamps; one clock for handlers and engine).
    pub fn system(&self, at: Instant) -> SystemTime {
        self.start_system + at.saturating_duration_since(self.start)
    }

    pub fn now_system(&self) -> SystemTime {
        self.system(Instant::now())
    }

    /// Simulated seconds since start.
    pub fn sim_elapsed(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64() * self.time_scale
    }

    /// Wall time a span of simulated seconds takes.
    pub fn wall(&self, sim_seconds: f64) -> Duration {
        // Saturates instead of panicking on an unrepresentable span (config bounds the scale).
        Duration::try_from_secs_f64((sim_seconds / self.time_scale).max(0.0))
            .unwrap_or(Duration::from_secs(86_400))
    }
}

/// A snapshot of the engine, updated every step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineStats {
    pub running: u64,
    pub waiting: u64,
    /// Always 0: like vLLM v1, the simulator recomputes preempted sequences instead of swapping.
    pub swapped: u64,
    pub kv_blocks_used: u64,
    pub kv_blocks_total: u64,
    pub steps: u64,
    pub preemptions: u64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    /// Requests that ended normally (stop or length).
    pub finished: u64,
    /// Requests whose client went away.
    pub aborted: u64,
    /// Accepted requests that failed (injected mid-stream errors, shutdown).
    pub failed: u64,
    /// Requests turned away on arrival (queue full or injected arrival errors).
    pub rejected: u64,
    /// Simulated seconds the GPU spent stepping.
    pub busy_seconds: f64,
    /// Simulated seconds since start.
    pub elapsed_seconds: f64,
}

impl EngineStats {
    pub fn kv_cache_usage(&self) -> f64 {
        if self.kv_blocks_total == 0 {
            0.0
        } else {
            self.kv_blocks_used as f64 / self.kv_blocks_total as f64
        }
    }
}

/// State shared by the engine task and the request handlers.
pub struct Shared {
    pub resolved: Resolved,
    pub clock: SimClock,
    pub scenario: Scenario,
    /// Fault rolls made by handlers at arrival (seeded; one lock per request).
    pub rng: Mutex<SmallRng>,
    /// Admitted requests not yet scheduled for the first time (admission control).
    pub fresh_waiting: AtomicU64,
    pub rejected: AtomicU64,
    pub stats: Mutex<EngineStats>,
    pub vllm: Option<Mutex<VllmMetrics>>,
    /// vLLM-shaped request spans (`trace_format` vllm or both).
    pub vllm_traces: Option<crate::vllm_trace::VllmTraces>,
    pub commands: mpsc::UnboundedSender<Command>,
}

impl Shared {
    /// The faults in effect now.
    pub fn faults_now(&self) -> Faults {
        self.faults_at(Instant::now())
    }

    fn faults_at(&self, at: Instant) -> Faults {
        self.scenario
            .active_at(&self.resolved.config.faults, self.clock.sim_elapsed(at))
    }

    pub fn stats(&self) -> EngineStats {
        let mut stats = *lock(&self.stats);
        stats.rejected = self.rejected.load(Ordering::Relaxed);
        stats
    }

    pub fn vllm_gauges(&self) -> VllmGauges {
        let s = self.stats();
        VllmGauges {
            running: s.running,
            waiting: s.waiting,
            kv_cache_usage: s.kv_cache_usage(),
            preemptions: s.preemptions,
            prompt_tokens: s.prompt_tokens,
            generation_tokens: s.generation_tokens,
            prefix_cache_queries: s.prefix_cache_queries,
            prefix_cache_hits: s.prefix_cache_hits,
            cache: CacheInfo {
                block_size: self.resolved.config.kv_cache.block_size,
                // vLLM's pool counts the null block, which is never allocated and which its
                // usage gauge leaves out: usage = 1 - free / (num_gpu_blocks - 1)
                // (vllm/v1/core/block_pool.py BlockPool.get_usage, 0.33.0). The simulator's
                // blocks are all allocatable, so the vLLM-equivalent pool is one larger.
                num_gpu_blocks: self.resolved.num_blocks + 1,
                gpu_memory_utilization: self.resolved.config.kv_cache.gpu_memory_utilization,
                enable_prefix_caching: self.resolved.config.kv_cache.prefix_caching,
            },
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain counters; the data
/// is still usable, and telemetry must never take the service down.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A request inside the engine.
struct Client {
    events: mpsc::UnboundedSender<Event>,
    lifecycle: Lifecycle,
    finish_reason: FinishReason,
    fail_at: Option<u32>,
    queue_position: u64,
    prompt_tokens: u32,
    cached_tokens: u32,
    max_tokens: u32,
    /// Output tokens delivered so far.
    generated: u32,
    preemptions: u32,
    arrived: SystemTime,
    arrived_at: Instant,
    scheduled: Option<SystemTime>,
    first_token: Option<SystemTime>,
    last_token: Option<SystemTime>,
    vllm_span: Option<VllmSpan>,
}

impl Client {
    /// vLLM's span for a request that ended in the engine (vLLM emits none for a client that
    /// went away).
    fn emit_vllm_span(&self, traces: Option<&VllmTraces>, at: SystemTime) {
        if let (Some(traces), Some(span)) = (traces, &self.vllm_span) {
            let times = EngineTimes {
                queued: Some(self.arrived),
                scheduled: self.scheduled,
                first_token: self.first_token,
                last_token: self.last_token,
                generation_tokens: self.generated,
            };
            traces.emit(span, &times, at);
        }
    }

    fn vllm_record(&self, reason: FinishedReason, at: SystemTime) -> FinishedRequest {
        let scheduled = self.scheduled.unwrap_or(at);
        let first = self.first_token.unwrap_or(at);
        FinishedRequest {
            reason,
            e2e: secs(self.arrived, at),
            queue: secs(self.arrived, scheduled),
            prefill: secs(scheduled, first),
            decode: secs(first, at),
            inference: secs(scheduled, at),
            prompt_tokens: self.prompt_tokens,
            generation_tokens: self.generated,
            cached_tokens: self.cached_tokens,
            preemptions: self.preemptions,
            max_tokens: self.max_tokens,
        }
    }
}

fn secs(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64())
}

/// How a request leaves the engine other than by finishing.
#[derive(Clone, Copy)]
enum Exit {
    Aborted,
    Failed(Failure),
}

pub struct Engine {
    shared: Arc<Shared>,
    scheduler: Scheduler,
    clients: HashMap<SeqId, Client>,
    rng: SmallRng,
    metrics: EngineMetrics,
    stats: EngineStats,
    vllm_pending: PendingVllm,
}

/// vLLM-format observations of one step, buffered so the shared histograms are locked once.
#[derive(Default)]
struct PendingVllm {
    /// (TTFT, prompt tokens, cached prompt tokens) of each request whose prefill completed.
    first_tokens: Vec<(f64, u32, u32)>,
    itl: Vec<f64>,
    /// Tokens computed per step (prompt tokens plus generated tokens, as vLLM counts them).
    iteration_tokens: Vec<u64>,
    finished: Vec<FinishedRequest>,
}

impl Engine {
    pub fn new(shared: Arc<Shared>, metrics: EngineMetrics) -> Self {
        let r = &shared.resolved;
        let cfg = &r.config;
        let kv = KvCache::new(
            r.num_blocks,
            cfg.kv_cache.block_size,
            cfg.kv_cache.prefix_caching,
        );
        let limits = SchedulerLimits {
            max_num_seqs: cfg.scheduler.max_num_seqs,
            max_num_batched_tokens: cfg.scheduler.max_num_batched_tokens,
            chunked_prefill: cfg.scheduler.chunked_prefill,
        };
        // The handlers' RNG is seeded with `seed`; the engine's with a different stream of it.
        let rng = SmallRng::seed_from_u64(cfg.seed ^ 0x9e37_79b9_7f4a_7c15);
        let stats = EngineStats {
            kv_blocks_total: u64::from(r.num_blocks),
            ..EngineStats::default()
        };
        Self {
            shared,
            scheduler: Scheduler::new(limits, kv),
            clients: HashMap::new(),
            rng,
            metrics,
            stats,
            vllm_pending: PendingVllm::default(),
        }
    }

    /// Runs until shut down (or every handle is gone).
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        self.publish(0, 0);
        let mut step_start = Instant::now();
        loop {
            if self.scheduler.is_idle() {
                match commands.recv().await {
                    Some(Command::Submit(s)) => self.admit(*s),
                    Some(Command::Shutdown) | None => break,
                }
                step_start = Instant::now();
            }
            if !self.drain(&mut commands) {
                break;
            }
            let now = Instant::now();
            step_start = step_start.max(now.checked_sub(CATCH_UP).unwrap_or(now));
            let faults = self.shared.faults_at(step_start);
            self.scheduler.kv_mut().set_pressure(faults.kv_pressure);
            self.drop_departed_waiting(self.shared.clock.system(step_start));
            self.flush_vllm();

            let plan = self.scheduler.schedule();
            // Catching up may date a step back, but never before a request it serves arrived:
            // otherwise a latency could come out below the model's physical minimum.
            if let Some(latest) = self.latest_new_arrival(&plan) {
                step_start = step_start.max(latest);
            }
            let start_time = self.shared.clock.system(step_start);
            self.on_scheduled(&plan, start_time);
            if plan.scheduled.is_empty() {
                self.publish(0, plan.preempted.len() as u64);
                if plan.preempted.is_empty() && !self.scheduler.is_idle() {
                    // Nothing fits (KV pressure): wait for a change instead of spinning.
                    tokio::select! {
                        cmd = commands.recv() => match cmd {
                            Some(Command::Submit(s)) => self.admit(*s),
                            Some(Command::Shutdown) | None => break,
                        },
                        _ = tokio::time::sleep(STALL_RECHECK) => {}
                    }
                }
                step_start = Instant::now();
                continue;
            }

            let work = StepWork::of(&plan);
            let sim_seconds = step_time(&self.shared.resolved.profile, &work).seconds
                * faults.latency_factor
                + faults.roll_spike(&mut self.rng);
            let step_end = step_start + self.shared.clock.wall(sim_seconds);
            if step_end > Instant::now() {
                sleep_precisely_until(step_end).await;
            } else {
                // Behind schedule: run on, but let the handlers' tasks have the thread.
                tokio::task::yield_now().await;
            }
            // Tokens are stamped when they are handed on to their connections, which is never
            // before the step's simulated end (a late timer or a busy host only adds to it).
            let end_time = self.shared.clock.system(step_end.max(Instant::now()));
            self.stats.busy_seconds += sim_seconds;
            self.share_step_time(&plan, step_end.saturating_duration_since(step_start));
            let tokens = self.scheduler.complete(&plan);
            if self.shared.vllm.is_some() {
                // vLLM counts prompt tokens computed plus tokens generated. A decoding
                // sequence computes one token and generates one; a prefill that completes
                // also generates its first token.
                let computed: u64 = plan.scheduled.iter().map(|s| u64::from(s.new_tokens)).sum();
                let first_tokens = tokens.iter().filter(|t| t.index == 0).count() as u64;
                self.vllm_pending
                    .iteration_tokens
                    .push(computed + first_tokens);
            }
            self.deliver(&tokens, end_time);
            self.flush_vllm();
            self.publish(1, plan.preempted.len() as u64);
            step_start = step_end;
        }
        self.shut_down(commands);
    }

    /// When the last of the requests scheduled for the first time in `plan` arrived.
    fn latest_new_arrival(&self, plan: &StepPlan) -> Option<Instant> {
        plan.scheduled
            .iter()
            .filter(|s| s.first_schedule)
            .filter_map(|s| self.clients.get(&s.id))
            .map(|c| c.arrived_at)
            .max()
    }

    /// Takes every queued command; false when the engine must stop.
    fn drain(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> bool {
        loop {
            match commands.try_recv() {
                Ok(Command::Submit(s)) => self.admit(*s),
                Ok(Command::Shutdown) => return false,
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn admit(&mut self, s: Submission) {
        let prompt_tokens = s.spec.prompt_tokens;
        let id = self.scheduler.add(s.spec);
        self.clients.insert(
            id,
            Client {
                events: s.events,
                lifecycle: Lifecycle::Queued(s.request),
                finish_reason: s.finish_reason,
                fail_at: s.fail_at,
                queue_position: s.queue_position,
                prompt_tokens,
                cached_tokens: 0,
                max_tokens: s.max_tokens,
                generated: 0,
                preemptions: 0,
                arrived: s.arrived,
                arrived_at: s.arrived_at,
                scheduled: None,
                first_token: None,
                last_token: None,
                vllm_span: s.vllm_span,
            },
        );
    }

    /// Aborts waiting requests whose client already hung up (no token will ever tell us).
    fn drop_departed_waiting(&mut self, at: SystemTime) {
        let departed: Vec<SeqId> = self
            .scheduler
            .waiting()
            .filter(|id| self.clients.get(id).is_none_or(|c| c.events.is_closed()))
            .collect();
        for id in departed {
            self.exit(id, Exit::Aborted, at);
        }
    }

    fn on_scheduled(&mut self, plan: &StepPlan, at: SystemTime) {
        for id in &plan.preempted {
            if let Some(c) = self.clients.get_mut(id) {
                c.preemptions += 1;
                c.lifecycle.preempted(at);
            }
        }
        for s in &plan.scheduled {
            let Some(c) = self.clients.get_mut(&s.id) else {
                continue;
            };
            if s.first_schedule {
                // A request cannot be scheduled before it arrived, whatever the catch-up did.
                let at = at.max(c.arrived);
                c.scheduled = Some(at);
                c.cached_tokens = s.cached_tokens;
                c.lifecycle.scheduled(c.queue_position, at);
                self.shared.fresh_waiting.fetch_sub(1, Ordering::AcqRel);
            } else if s.resumed {
                c.lifecycle.resumed(at);
            }
        }
    }

    /// Splits a step's (wall-clock) duration over the sequences it served, by the tokens it
    /// computed for each: the GPU-time share each request's span and metrics report.
    fn share_step_time(&mut self, plan: &StepPlan, step: Duration) {
        let total: u64 = plan.scheduled.iter().map(|s| u64::from(s.new_tokens)).sum();
        if total == 0 {
            return;
        }
        let per_token = step.as_secs_f64() / total as f64;
        for s in &plan.scheduled {
            if let Some(c) = self.clients.get_mut(&s.id) {
                c.lifecycle.gpu_time(per_token * f64::from(s.new_tokens));
            }
        }
    }

    fn deliver(&mut self, tokens: &[TokenOut], at: SystemTime) {
        let record_vllm = self.shared.vllm.is_some();
        for t in tokens {
            let Some(c) = self.clients.get_mut(&t.id) else {
                continue;
            };
            if c.fail_at == Some(t.index) {
                self.exit(t.id, Exit::Failed(Failure::MidStream), at);
                continue;
            }
            let finish = t.finished.then_some(c.finish_reason);
            let event = Event::Token {
                index: t.index,
                cached_tokens: c.cached_tokens,
                finish,
            };
            if c.events.send(event).is_err() {
                // The client went away: this token was never delivered.
                self.exit(t.id, Exit::Aborted, at);
                continue;
            }
            self.stats.generation_tokens += 1;
            c.generated = t.index + 1;
            if t.index == 0 {
                // As vLLM counts them: a request's prompt tokens when its prefill completes.
                self.stats.prompt_tokens += u64::from(c.prompt_tokens);
                c.first_token = Some(at);
                c.lifecycle.first_token(u64::from(c.cached_tokens), at);
                if record_vllm {
                    let ttft = secs(c.arrived, at);
                    let first = (ttft, c.prompt_tokens, c.cached_tokens);
                    self.vllm_pending.first_tokens.push(first);
                }
            } else {
                c.lifecycle.token();
                if let (true, Some(last)) = (record_vllm, c.last_token) {
                    self.vllm_pending.itl.push(secs(last, at));
                }
            }
            c.last_token = Some(at);
            if let Some(reason) = finish {
                c.lifecycle.finish(reason.as_str(), at);
                if record_vllm {
                    let record = c.vllm_record(reason.vllm(), at);
                    self.vllm_pending.finished.push(record);
                }
                c.emit_vllm_span(self.shared.vllm_traces.as_ref(), at);
                self.stats.finished += 1;
                self.clients.remove(&t.id);
            }
        }
    }

    /// Ends a request that did not finish: frees its blocks, tells its handler (if it still
    /// listens), records the telemetry.
    fn exit(&mut self, id: SeqId, exit: Exit, at: SystemTime) {
        if let Some(removed) = self.scheduler.remove(id) {
            if removed.never_scheduled {
                self.shared.fresh_waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let Some(mut c) = self.clients.remove(&id) else {
            return;
        };
        let reason = match exit {
            Exit::Aborted => {
                c.lifecycle.abort(at);
                self.stats.aborted += 1;
                FinishedReason::Abort
            }
            Exit::Failed(failure) => {
                let _ = c.events.send(Event::Failed(failure));
                c.lifecycle.fail(failure.error_type(), at);
                c.emit_vllm_span(self.shared.vllm_traces.as_ref(), at);
                self.stats.failed += 1;
                FinishedReason::Error
            }
        };
        if self.shared.vllm.is_some() {
            self.vllm_pending.finished.push(c.vllm_record(reason, at));
        }
    }

    /// Moves the step's vLLM-format observations into the shared histograms: one lock per step.
    fn flush_vllm(&mut self) {
        let Some(shared) = &self.shared.vllm else {
            return;
        };
        let p = &mut self.vllm_pending;
        if p.first_tokens.is_empty()
            && p.itl.is_empty()
            && p.iteration_tokens.is_empty()
            && p.finished.is_empty()
        {
            return;
        }
        let mut v = lock(shared);
        for (ttft, prompt, cached) in p.first_tokens.drain(..) {
            v.first_token(ttft, prompt, cached);
        }
        p.iteration_tokens.drain(..).for_each(|n| v.iteration(n));
        p.itl.drain(..).for_each(|s| v.inter_token(s));
        p.finished.drain(..).for_each(|r| v.finished(&r));
    }

    /// Updates the engine gauges and the shared snapshot after a step.
    fn publish(&mut self, iterations: u64, preemptions: u64) {
        let kv = self.scheduler.kv();
        let prefix = self.scheduler.prefix_stats();
        let s = &mut self.stats;
        s.running = self.scheduler.num_running() as u64;
        s.waiting = self.scheduler.num_waiting() as u64;
        s.kv_blocks_used = u64::from(kv.num_used());
        s.steps += iterations;
        s.preemptions = self.scheduler.preemptions();
        s.prefix_cache_queries = prefix.queries;
        s.prefix_cache_hits = prefix.hits;
        s.elapsed_seconds = self.shared.clock.sim_elapsed(Instant::now());
        self.metrics.record_step(&EngineSnapshot {
            running: s.running,
            waiting: s.waiting,
            swapped: 0,
            kv_blocks_used: s.kv_blocks_used,
            kv_blocks_total: s.kv_blocks_total,
            iterations,
            preemptions,
        });
        *lock(&self.shared.stats) = *s;
    }

    /// Fails everything still in flight, including requests submitted but not yet taken in.
    fn shut_down(&mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        commands.close();
        while let Ok(command) = commands.try_recv() {
            if let Command::Submit(s) = command {
                self.admit(*s);
            }
        }
        let at = self.shared.clock.now_system();
        let ids: Vec<SeqId> = self.clients.keys().copied().collect();
        for id in ids {
            self.exit(id, Exit::Failed(Failure::Shutdown), at);
        }
        self.flush_vllm();
        self.publish(0, 0);
    }
}
