//! Continuous batching, as vLLM v1's scheduler does it, without any notion of time.
//!
//! Each step has a token budget (`max_num_batched_tokens`). Running sequences are served first,
//! oldest first: a decoding sequence needs one token, a sequence still in prefill needs the
//! rest of its prompt (a chunk of it under chunked prefill). When the KV cache cannot hold a
//! sequence's new tokens, the newest running sequence is preempted — its blocks are freed and
//! it goes back to the front of the waiting queue, to be recomputed later (vLLM v1 recomputes;
//! it never swaps, so the swapped count is always 0). Then, if nobody was preempted, waiting
//! sequences are admitted in queue order until the batch, the budget or the cache is full; the
//! first one that does not fit stops admission, so the queue order is never overtaken.

use std::collections::{HashMap, VecDeque};

use crate::kv_cache::{BlockId, KvCache};

pub type SeqId = u64;

/// What the engine knows about a sequence when it arrives.
#[derive(Debug, Clone, Default)]
pub struct SeqSpec {
    pub prompt_tokens: u32,
    /// Tokens it will generate before it ends (its natural length or `max_tokens`).
    pub output_tokens: u32,
    /// Prefix-cache keys of the prompt's full blocks (see `tokens::block_hashes`).
    pub block_hashes: Vec<u64>,
    /// Prompt tokens whose KV arrived from a prefill worker (disaggregated prefill): computed
    /// at the first admission, except the last one, which the first step computes (a preempted
    /// sequence has lost them and recomputes, as vLLM's decode workers do).
    pub transferred_tokens: u32,
}

#[derive(Debug)]
struct Seq {
    spec: SeqSpec,
    /// Tokens generated so far.
    output: u32,
    /// Tokens (prompt, then output) whose KV entries are computed.
    computed: u32,
    blocks: Vec<BlockId>,
    /// Leading blocks whose prefix hash is registered in the cache.
    registered: usize,
    scheduled_before: bool,
    preempted_waiting: bool,
}

impl Seq {
    fn total_tokens(&self) -> u32 {
        self.spec.prompt_tokens + self.output
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerLimits {
    pub max_num_seqs: u32,
    pub max_num_batched_tokens: u32,
    pub chunked_prefill: bool,
}

/// One sequence's share of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub id: SeqId,
    /// Tokens computed for it this step.
    pub new_tokens: u32,
    /// Tokens already computed before this step (attention reads their KV).
    pub context_tokens: u32,
    /// Scheduled for the first time (it leaves the queue).
    pub first_schedule: bool,
    /// Scheduled again after a preemption.
    pub resumed: bool,
    /// Prompt tokens not computed at this admission: prefix-cache hits, or the KV cache
    /// transferred from a prefill worker.
    pub cached_tokens: u32,
}

/// The batch of one step.
#[derive(Debug, Default)]
pub struct StepPlan {
    pub scheduled: Vec<Scheduled>,
    /// Sequences evicted (back to the waiting queue) while building this batch.
    pub preempted: Vec<SeqId>,
}

impl StepPlan {
    #[cfg(test)]
    pub fn batched_tokens(&self) -> u32 {
        self.scheduled.iter().map(|s| s.new_tokens).sum()
    }
}

/// An output token produced at the end of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenOut {
    pub id: SeqId,
    /// 0 for the first output token.
    pub index: u32,
    /// The sequence has produced all its tokens and left the engine.
    pub finished: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Prompt tokens looked up at admission.
    pub queries: u64,
    /// Of those, tokens found in the cache.
    pub hits: u64,
}

#[derive(Debug)]
pub struct Scheduler {
    limits: SchedulerLimits,
    kv: KvCache,
    seqs: HashMap<SeqId, Seq>,
    waiting: VecDeque<SeqId>,
    /// In scheduling order: the last one is the newest, preempted first.
    running: Vec<SeqId>,
    next_id: SeqId,
    preemptions: u64,
    prefix_stats: PrefixCacheStats,
}

impl Scheduler {
    pub fn new(limits: SchedulerLimits, kv: KvCache) -> Self {
        Self {
            limits,
            kv,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_id: 0,
            preemptions: 0,
            prefix_stats: PrefixCacheStats::default(),
        }
    }

    /// Queues a new sequence at the back of the waiting queue. Ids grow in arrival order.
    pub fn add(&mut self, spec: SeqSpec) -> SeqId {
        let id = self.next_id;
        self.next_id += 1;
        self.seqs.insert(
            id,
            Seq {
                spec,
                output: 0,
                computed: 0,
                blocks: Vec::new(),
                registered: 0,
                scheduled_before: false,
                preempted_waiting: false,
            },
        );
        self.waiting.push_back(id);
        id
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    pub fn kv(&self) -> &KvCache {
        &self.kv
    }

    pub fn kv_mut(&mut self) -> &mut KvCache {
        &mut self.kv
    }

    /// Preemptions since start.
    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    pub fn prefix_stats(&self) -> PrefixCacheStats {
        self.prefix_stats
    }

    /// Waiting sequences, front first.
    pub fn waiting(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.waiting.iter().copied()
    }

    /// Builds the next step's batch and reserves its KV blocks.
    pub fn schedule(&mut self) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut budget = self.limits.max_num_batched_tokens;
        self.schedule_running(&mut plan, &mut budget);
        if plan.preempted.is_empty() {
            self.schedule_waiting(&mut plan, &mut budget);
        }
        plan
    }

    fn schedule_running(&mut self, plan: &mut StepPlan, budget: &mut u32) {
        let mut i = 0;
        while i < self.running.len() && *budget > 0 {
            let id = self.running[i];
            let seq = &self.seqs[&id];
            let remaining = seq.total_tokens() - seq.computed;
            let new_tokens = if self.limits.chunked_prefill {
                remaining.min(*budget)
            } else if remaining > *budget {
                // Without chunking a prompt is only ever computed whole; wait for a bigger
                // budget next step.
                i += 1;
                continue;
            } else {
                remaining
            };
            let context = seq.computed;
            if !self.grow(id, context + new_tokens, plan) {
                // It preempted itself: nothing else fits either.
                break;
            }
            plan.scheduled.push(Scheduled {
                id,
                new_tokens,
                context_tokens: context,
                first_schedule: false,
                resumed: false,
                cached_tokens: 0,
            });
            *budget -= new_tokens;
            i += 1;
        }
    }

    /// Makes room for `id` to hold `tokens`, preempting the newest running sequences while it
    /// does not fit. False if `id` itself had to be preempted.
    fn grow(&mut self, id: SeqId, tokens: u32, plan: &mut StepPlan) -> bool {
        loop {
            let seq = self.seqs.get_mut(&id).expect("running sequence exists");
            if self.kv.allocate(&mut seq.blocks, &[], tokens) {
                return true;
            }
            let victim = self.running.pop().expect("id itself is running");
            self.preempt(victim);
            plan.preempted.push(victim);
            if victim == id {
                return false;
            }
        }
    }

    fn preempt(&mut self, id: SeqId) {
        let seq = self.seqs.get_mut(&id).expect("preempted sequence exists");
        self.kv.free(&mut seq.blocks);
        seq.computed = 0;
        seq.registered = 0;
        seq.preempted_waiting = true;
        self.waiting.push_front(id);
        self.preemptions += 1;
    }

    fn schedule_waiting(&mut self, plan: &mut StepPlan, budget: &mut u32) {
        while let Some(&id) = self.waiting.front() {
            if self.running.len() >= self.limits.max_num_seqs as usize || *budget == 0 {
                break;
            }
            let seq = &self.seqs[&id];
            let total = seq.total_tokens();
            // At least the last token is always computed, so a full hit still runs a step.
            let max_hit_blocks = ((total - 1) / self.kv.block_size()) as usize;
            let mut hits = self
                .kv
                .cached_prefix(&seq.spec.block_hashes, max_hit_blocks);
            let prefix_tokens = hits.len() as u32 * self.kv.block_size();
            let transferred = if seq.scheduled_before {
                0
            } else {
                seq.spec.transferred_tokens.min(total - 1)
            };
            // Transferred KV goes into fresh blocks; it is not a prefix-cache hit (vLLM counts
            // it as the request's cached tokens, and apart from its prefix-cache hits).
            let (computed, prefix_hits) = if transferred > prefix_tokens {
                hits.clear();
                (transferred, 0)
            } else {
                (prefix_tokens, prefix_tokens)
            };
            let remaining = total - computed;
            if !self.limits.chunked_prefill && remaining > *budget {
                break;
            }
            let new_tokens = remaining.min(*budget);
            let seq = self.seqs.get_mut(&id).expect("waiting sequence exists");
            if !self
                .kv
                .allocate(&mut seq.blocks, &hits, computed + new_tokens)
            {
                break;
            }
            self.waiting.pop_front();
            self.running.push(id);
            let first_schedule = !seq.scheduled_before;
            let resumed = seq.preempted_waiting;
            seq.scheduled_before = true;
            seq.preempted_waiting = false;
            seq.computed = computed;
            seq.registered = hits.len();
            if first_schedule {
                self.prefix_stats.queries += u64::from(seq.spec.prompt_tokens);
                self.prefix_stats.hits += u64::from(prefix_hits);
            }
            plan.scheduled.push(Scheduled {
                id,
                new_tokens,
                context_tokens: computed,
                first_schedule,
                resumed,
                cached_tokens: computed,
            });
            *budget -= new_tokens;
        }
    }

    /// Applies a finished step: computed tokens advance, every sequence that caught up with its
    /// own length produces a token, and finished ones leave (their blocks freed).
    pub fn complete(&mut self, plan: &StepPlan) -> Vec<TokenOut> {
        let mut out = Vec::with_capacity(plan.scheduled.len());
        for step in &plan.scheduled {
            let Some(seq) = self.seqs.get_mut(&step.id) else {
                continue; // removed (aborted) after scheduling
            };
            seq.computed += step.new_tokens;
            seq.registered = self.kv.register_full_blocks(
                &seq.blocks,
                &seq.spec.block_hashes,
                seq.computed.min(seq.spec.prompt_tokens),
                seq.registered,
            );
            if seq.computed < seq.total_tokens() {
                continue; // a prefill chunk: no token yet
            }
            let index = seq.output;
            seq.output += 1;
            let finished = seq.output >= seq.spec.output_tokens;
            out.push(TokenOut {
                id: step.id,
                index,
                finished,
            });
            if finished {
                self.remove(step.id);
            }
        }
        out
    }

    /// Takes a sequence out of the engine (finished, aborted or failed) and frees its blocks.
    /// Returns whether it was still there, and whether it was waiting for its first schedule.
    pub fn remove(&mut self, id: SeqId) -> Option<Removed> {
        let mut seq = self.seqs.remove(&id)?;
        self.kv.free(&mut seq.blocks);
        if let Some(pos) = self.running.iter().position(|&r| r == id) {
            self.running.remove(pos);
        } else if let Some(pos) = self.waiting.iter().position(|&w| w == id) {
            self.waiting.remove(pos);
        }
        Some(Removed {
            never_scheduled: !seq.scheduled_before,
        })
    }

    #[cfg(test)]
    fn check(&self) -> Result<(), String> {
        let tables: Vec<&[BlockId]> = self.seqs.values().map(|s| s.blocks.as_slice()).collect();
        self.kv.check(&tables)?;
        if self.running.len() + self.waiting.len() != self.seqs.len() {
            return Err("a sequence is neither running nor waiting".into());
        }
        if self.running.len() > self.limits.max_num_seqs as usize {
            return Err("running batch exceeds max_num_seqs".into());
        }
        for id in &self.waiting {
            if !self.seqs[id].blocks.is_empty() {
                return Err(format!("waiting sequence {id} holds blocks"));
            }
        }
        for id in &self.running {
            let seq = &self.seqs[id];
            if seq.blocks.len() < self.kv.blocks_for(seq.computed) as usize {
                return Err(format!("sequence {id} computed more than its blocks hold"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub never_scheduled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scheduler(blocks: u32, block_size: u32, limits: SchedulerLimits, prefix: bool) -> Scheduler {
        Scheduler::new(limits, KvCache::new(blocks, block_size, prefix))
    }

    fn spec(prompt: u32, output: u32) -> SeqSpec {
        SeqSpec {
            prompt_tokens: prompt,
            output_tokens: output,
            ..SeqSpec::default()
        }
    }

    const LIMITS: SchedulerLimits = SchedulerLimits {
        max_num_seqs: 8,
        max_num_batched_tokens: 64,
        chunked_prefill: true,
    };

    #[test]
    fn a_sequence_prefills_then_decodes_one_token_per_step() {
        let mut s = scheduler(16, 4, LIMITS, false);
        let id = s.add(spec(10, 3));
        let plan = s.schedule();
        assert_eq!(plan.scheduled[0].new_tokens, 10);
        assert!(plan.scheduled[0].first_schedule);
        let out = s.complete(&plan);
        assert_eq!(
            out,
            vec![TokenOut {
                id,
                index: 0,
                finished: false
            }]
        );
        let plan = s.schedule();
        assert_eq!(plan.scheduled[0].new_tokens, 1);
        assert_eq!(plan.scheduled[0].context_tokens, 10);
        s.complete(&plan);
        let plan = s.schedule();
        let out = s.complete(&plan);
        assert_eq!(
            out,
            vec![TokenOut {
                id,
                index: 2,
                finished: true
            }]
        );
        assert!(s.is_idle());
        assert_eq!(s.kv().num_free(), 16);
    }

    #[test]
    fn chunked_prefill_splits_a_long_prompt_across_steps() {
        let mut s = scheduler(64, 4, LIMITS, false);
        s.add(spec(150, 1));
        let chunks: Vec<u32> = (0..3)
            .map(|_| {
                let plan = s.schedule();
                s.complete(&plan);
                plan.batched_tokens()
            })
            .collect();
        assert_eq!(chunks, vec![64, 64, 22]);
        assert!(s.is_idle());
    }

    #[test]
    fn out_of_blocks_preempts_the_newest_and_requeues_it_first() {
        // 4 blocks of 4 tokens; two sequences of 7 prompt tokens take 2 blocks each.
        let mut s = scheduler(4, 4, LIMITS, false);
        let old = s.add(spec(7, 10));
        let new = s.add(spec(7, 10));
        let later = s.add(spec(3, 1));
        let plan = s.schedule();
        assert_eq!(plan.scheduled.len(), 2, "the cache is full after two");
        s.complete(&plan); // both hold 7 computed tokens and 8 in total
        let plan = s.schedule();
        assert!(
            plan.preempted.is_empty(),
            "the 8th token still fits in two blocks"
        );
        s.complete(&plan);
        let plan = s.schedule(); // `old` needs a third block: `new` is preempted
        assert_eq!(plan.preempted, vec![new]);
        assert_eq!(plan.scheduled.len(), 1);
        assert_eq!(plan.scheduled[0].id, old);
        assert_eq!(s.waiting().collect::<Vec<_>>(), vec![new, later]);
        assert_eq!(s.preemptions(), 1);
    }

    #[test]
    fn transferred_kv_is_computed_at_admission_except_the_last_token() {
        let mut s = scheduler(32, 4, LIMITS, true);
        let id = s.add(SeqSpec {
            prompt_tokens: 22,
            output_tokens: 3,
            transferred_tokens: 22,
            ..SeqSpec::default()
        });
        let plan = s.schedule();
        let step = &plan.scheduled[0];
        assert_eq!((step.id, step.new_tokens, step.context_tokens), (id, 1, 21));
        assert_eq!(
            step.cached_tokens, 21,
            "the request's cached tokens, as vLLM counts them"
        );
        assert_eq!(s.prefix_stats().hits, 0, "but not prefix-cache hits");
    }

    #[test]
    fn prefix_cache_hits_are_block_aligned_and_counted() {
        let mut s = scheduler(32, 4, LIMITS, true);
        let hashes: Vec<u64> = (1..=5).collect();
        let first = SeqSpec {
            prompt_tokens: 22,
            output_tokens: 1,
            block_hashes: hashes.clone(),
            transferred_tokens: 0,
        };
        s.add(first.clone());
        let plan = s.schedule();
        s.complete(&plan);
        s.add(first);
        let plan = s.schedule();
        // 5 full blocks (20 tokens) cached; the remaining 2 prompt tokens are computed.
        assert_eq!(plan.scheduled[0].cached_tokens, 20);
        assert_eq!(plan.scheduled[0].new_tokens, 2);
        assert_eq!(
            s.prefix_stats(),
            PrefixCacheStats {
                queries: 44,
                hits: 20
            }
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add {
            prompt: u32,
            output: u32,
            prefix: u8,
        },
        Step,
        Abort(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1u32..60, 1u32..20, 0u8..3)
                .prop_map(|(prompt, output, prefix)| Op::Add { prompt, output, prefix }),
            6 => Just(Op::Step),
            1 => (0usize..32).prop_map(Op::Abort),
        ]
    }

    fn limits() -> impl Strategy<Value = SchedulerLimits> {
        (1u32..6, 4u32..80, any::<bool>()).prop_map(|(seqs, tokens, chunked)| SchedulerLimits {
            max_num_seqs: seqs,
            // Without chunking the budget must hold the longest sequence (as config checks).
            max_num_batched_tokens: if chunked { tokens } else { 80 },
            chunked_prefill: chunked,
        })
    }

    /// Hashes for a prompt built from one of three shared prefixes.
    fn hashes(prefix: u8, prompt: u32, block_size: u32) -> Vec<u64> {
        (0..prompt / block_size)
            .map(|k| u64::from(prefix) * 1000 + u64::from(k))
            .collect()
    }

    /// What the property test observed of a run.
    #[derive(Default)]
    struct Observed {
        live: Vec<SeqId>,
        expected_tokens: HashMap<SeqId, u32>,
        produced: HashMap<SeqId, u32>,
        first_scheduled: Vec<SeqId>,
        preempted: Vec<SeqId>,
        finished: Vec<SeqId>,
    }

    fn run_step(
        s: &mut Scheduler,
        limits: SchedulerLimits,
        seen: &mut Observed,
    ) -> Result<(), TestCaseError> {
        let plan = s.schedule();
        prop_assert!(plan.batched_tokens() <= limits.max_num_batched_tokens);
        prop_assert!(s.kv().num_used() <= s.kv().num_blocks());
        seen.first_scheduled.extend(
            plan.scheduled
                .iter()
                .filter(|x| x.first_schedule)
                .map(|x| x.id),
        );
        seen.preempted.extend(&plan.preempted);
        s.check().map_err(TestCaseError::fail)?;
        for token in s.complete(&plan) {
            let n = seen.produced.entry(token.id).or_default();
            prop_assert_eq!(token.index, *n, "tokens arrive in order, none lost");
            *n += 1;
            if token.finished {
                seen.live.retain(|&l| l != token.id);
                seen.finished.push(token.id);
            }
        }
        s.check().map_err(TestCaseError::fail)?;
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Blocks are never over-allocated, every structure stays consistent after every
        /// operation, the queue is admitted in arrival order, and once arrivals stop every
        /// sequence (including preempted ones) finishes and every block is free again.
        #[test]
        fn invariants_hold_and_everything_drains(
            limits in limits(),
            prefix_caching in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            // 20 blocks of 4 tokens = 80 tokens, enough for the longest sequence (59 + 19).
            let block_size = 4;
            let mut s = scheduler(20, block_size, limits, prefix_caching);
            let mut seen = Observed::default();
            for op in ops {
                match op {
                    Op::Add { prompt, output, prefix } => {
                        let id = s.add(SeqSpec {
                            prompt_tokens: prompt,
                            output_tokens: output,
                            block_hashes: hashes(prefix, prompt, block_size),
                            transferred_tokens: 0,
                        });
                        seen.live.push(id);
                        seen.expected_tokens.insert(id, output);
                    }
                    Op::Step => run_step(&mut s, limits, &mut seen)?,
                    Op::Abort(i) => {
                        if !seen.live.is_empty() {
                            let id = seen.live.remove(i % seen.live.len());
                            prop_assert!(s.remove(id).is_some());
                            seen.expected_tokens.remove(&id);
                            s.check().map_err(TestCaseError::fail)?;
                        }
                    }
                }
            }
            // Drain: with no new arrivals everything must finish within a bounded number of
            // steps (no livelock between preemption and readmission).
            let mut steps = 0;
            while !s.is_idle() {
                run_step(&mut s, limits, &mut seen)?;
                steps += 1;
                prop_assert!(steps < 20_000, "engine did not drain");
            }
            prop_assert_eq!(s.kv().num_free(), s.kv().num_blocks(), "every block freed");
            for id in &seen.finished {
                prop_assert_eq!(seen.produced.get(id), seen.expected_tokens.get(id));
            }
            for id in &seen.preempted {
                prop_assert!(
                    seen.finished.contains(id) || !seen.expected_tokens.contains_key(id),
                    "preempted sequence {} neither finished nor aborted", id
                );
            }
            let mut sorted = seen.first_scheduled.clone();
            sorted.sort_unstable();
            prop_assert_eq!(seen.first_scheduled, sorted, "admission follows arrival order");
        }
    }
}
