"""minirlhf: from GPT to ChatGPT-style alignment, built from scratch on a toy world.

The package is the InstructGPT pipeline, one module per stage, in the order a run goes through them:

    world        the toy world (creatures, corpus, prompts, demonstrations) and world.gold, the gold labeler
    tokenizer    byte-level BPE (GPT-2 style) and the chat format
    model        GPT-2 from scratch: attention, the causal mask, KV-cache generation, config presets
    pretrain     GPT-1's causal-LM objective L1(U) = Σ log P(u_i | u_{i-k..i-1}; Θ) and its training loop
    prompting    GPT-2's zero-shot and GPT-3's few-shot (in-context) accuracy of the pre-trained model
    sft          InstructGPT step 1: supervised fine-tuning on demonstrations, the prompt masked out
    comparisons  step 2's data: K answers per prompt from several policies, ranked by the noisy labeler
    reward       step 2: the reward model r_θ and the K-choose-2 pairwise loss
    probes       the reward model's accuracy per failure type (rude, repeated, unended, off-topic, wrong fact)
    ppo          step 3: PPO against r_θ with a per-token KL penalty to SFT, GAE, clipping, PPO-ptx
    evaluate     gold score, win rate vs SFT, KL to SFT, best-of-n: what InstructGPT measured with labelers
    chat         answering prompts and a multi-turn chat with any stage's model

Beyond the lecture (what came after PPO), judged by the same gold labeler:

    dpo          DPO: the comparisons' pairwise loss with β·log(π/π_ref) as the reward, no reward model
    grpo         GRPO and RLOO: group-relative advantages, no value model
    distill      best-of-n distillation (rejection-sampling fine-tuning)
    compare      every method from the same SFT start, gold score against KL to SFT (methods.json)

Plumbing around the stages:

    checkpoint   save and load a model with its tokenizer as a folder, atomically
    hf           our GPT <-> transformers' GPT2LMHeadModel, weights copied 1:1
    pipeline     every stage into one run folder (`python -m minirlhf pipeline`)
    runfolder    a run folder's manifest (run.json), lock and checksums: what --resume trusts
    distributed  torchrun data parallelism (one process: a no-op)
    validate     the configs' range checks (a bad number fails before any training)
    report       the run's report card (report.md, figures) and README's results section
    __main__     the command line (`python -m minirlhf --help`)

And the course's helpers, not part of the pipeline: minirlhf.course (figures, ipywidgets UIs, exercise checks,
the course run shipped under data/).
"""

__version__ = "0.1.0"
