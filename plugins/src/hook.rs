//! Plugin logits processors as engine generation hooks, so the worker applies them through
//! `Session::generate_steps_hooked` like any other logits hook instead of a loop of its own.

use std::sync::Arc;

use hangar_engine::constraint::{HookError, Hooks, LogitsHook};
use hangar_plugin_api::LogitsProcessor;

/// One processor and the token history it is shown (a processor may ban by what came
/// before, e.g. repeats, so it sees the prompt and every sampled token).
struct ProcessorHook {
    processor: Arc<dyn LogitsProcessor>,
    history: Vec<u32>,
}

impl LogitsHook for ProcessorHook {
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), HookError> {
        self.processor
            .process(&self.history, logits)
            .map_err(|e| HookError(format!("logits processor {:?}: {e}", self.processor.name())))
    }

    fn accept(&mut self, token: u32) -> Result<(), HookError> {
        self.history.push(token);
        Ok(())
    }
}

/// The processors one request selected, in the order it named them.
pub struct ProcessorHooks(Vec<ProcessorHook>);

impl ProcessorHooks {
    pub fn new(processors: &[Arc<dyn LogitsProcessor>], prompt: &[u32]) -> Self {
        ProcessorHooks(processors.iter().map(|p| ProcessorHook { processor: p.clone(), history: prompt.to_vec() }).collect())
    }

    /// Engine hooks that run every processor before each sampling step.
    pub fn hooks(&mut self) -> Hooks<'_> {
        let mut hooks = Hooks::default();
        hooks.logits = self.0.iter_mut().map(|h| h as &mut dyn LogitsHook).collect();
        hooks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bans every token already in the history: a processor whose effect depends on the
    /// history the hook keeps.
    struct NoRepeat;

    impl LogitsProcessor for NoRepeat {
        fn name(&self) -> &str {
            "no-repeat"
        }
        fn process(&self, history: &[u32], logits: &mut [f32]) -> Result<(), String> {
            for &t in history {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            Ok(())
        }
    }

    struct Fails;

    impl LogitsProcessor for Fails {
        fn name(&self) -> &str {
            "fails"
        }
        fn process(&self, _: &[u32], _: &mut [f32]) -> Result<(), String> {
            Err("out of order".into())
        }
    }

    #[test]
    fn the_processor_sees_the_prompt_and_every_accepted_token() {
        let procs: Vec<Arc<dyn LogitsProcessor>> = vec![Arc::new(NoRepeat)];
        let mut hooks = ProcessorHooks::new(&procs, &[1]);
        let mut h = hooks.hooks();
        let mut logits = vec![0.0f32; 4];
        h.logits[0].mask(&mut logits).expect("mask");
        assert_eq!(logits, [0.0, f32::NEG_INFINITY, 0.0, 0.0]);
        h.logits[0].accept(3).expect("accept");
        let mut logits = vec![0.0f32; 4];
        h.logits[0].mask(&mut logits).expect("mask");
        assert_eq!(logits, [0.0, f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn a_processor_error_names_the_processor() {
        let procs: Vec<Arc<dyn LogitsProcessor>> = vec![Arc::new(Fails)];
        let mut hooks = ProcessorHooks::new(&procs, &[]);
        let mut h = hooks.hooks();
        let err = h.logits[0].mask(&mut [0.0]).expect_err("the processor fails");
        assert!(err.0.contains("\"fails\"") && err.0.contains("out of order"), "{}", err.0);
    }
}
