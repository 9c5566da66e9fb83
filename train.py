"""
Train a hybrid RoPE/NoPE transformer. One process:

    python train.py config/hybrid_long.py
    python train.py config/hybrid_tiny.py --max_iters=50 --out_dir=out-test

Several processes (DDP; NCCL on CUDA, gloo on CPU), or with the model sharded over them (FSDP2):

    torchrun --standalone --nproc_per_node=4 train.py config/hybrid_long_gpu.py
    torchrun --standalone --nproc_per_node=8 train.py config/hybrid_1b_gpu.py    # --fsdp=True

Stages (the paper's recipe: pretrain short, then continue long; or a curriculum): `stages` lists
from which iteration on to train at which context and batch size, e.g. in config/recall.py.
A run can also continue from a checkpoint with a new block_size / rope_theta / sliding_window:

    python train.py config/hybrid_tiny.py --init_from=resume --block_size=2048 --max_iters=400
"""

import fcntl
import functools
import json
import math
import os
import sys
import time
from collections import namedtuple
from contextlib import nullcontext
from dataclasses import asdict, fields

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torch.utils.checkpoint
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from common import (flops_per_token, keep_freed_memory, load_model, matmul_peak_flops,
                    resolve_device, write_atomic)
from configurator import configure, fail
from hub import local_folder
from model import GPT, GPTConfig
from corpus import (DATA, RECALL_VOCAB, builtin_corpus, get_tokenizer, prepare, recall_batch,
                    retrieval_sequence,
                    token_dtype)

# -----------------------------------------------------------------------------
# default settings; override with config/*.py files and --key=value. Each number's annotation is its
# valid range, checked by configure(): '[1, inf)' = at least 1, '(0, inf)' = above 0, '[0, 1]' =
# from 0 to 1.
# I/O
out_dir = 'out'
eval_interval: '[1, inf)' = 50            # evaluate and checkpoint every this many iterations (and
                                          # at the end)
eval_iters: '[1, inf)' = 8                # batches per loss estimate
log_interval: '[1, inf)' = 5
init_from = 'scratch'                     # 'scratch', 'resume' (from out_dir/ckpt.pt), or a
                                          # transformers checkpoint to fine-tune (hub.py: SmolLM3,
                                          # Cohere2; a folder or hub name)
# data
dataset = 'shakespeare'                   # data/<dataset>/ from prepare_data.py (shakespeare: made
                                          # on first use); 'recall': associative recall made on the
                                          # fly (corpus.recall_batch)
recall_pairs: '[1, 64]' = 8               # dataset='recall': key-value pairs per sequence
batch_size: '[1, inf)' = 2                # sequences per micro-batch, per process
gradient_accumulation_steps: '[1, inf)' = 1  # micro-batches per optimizer step, over all processes
                                             # together
block_size: '[1, inf)' = 2048             # training context length
stages = ()                               # ((from_iter, block_size, batch_size[, retrieval_length,
                                          # retrieval_batch[, same_wording]]), ...): from each
                                          # iteration on, the text's context and micro-batch, and
                                          # the retrieval sequences trained beside them
                                          # (corpus.retrieval_sequence: needles in text, only the
                                          # answers scored), with the share in [0, 1] of those with
                                          # several needles that put them all in one wording, so
                                          # that only the key tells them apart (default 0);
                                          # () = one stage of text
retrieval_needles: '[1, inf)' = 4         # up to this many needles per retrieval sequence, each
                                          # asked for
retrieval_weight: '[0, inf)' = 1.0        # the answers' mean loss is added to the text's with this
                                          # weight
retrieval_distractors: '[0, inf)' = 0     # up to this many needle-shaped sentences without a number
                                          # in each
retrieval_shared_word: '[0, 1]' = 0.0     # chance that a key shares a word, in place, with an
                                          # earlier key
retrieval_score_last = True               # False: a same-wording sequence's last answer, given
                                          # away by elimination, is not scored
retrieval_text_nouns: '[0, 1]' = 0.0      # chance that a needle's noun is words of the text, not
                                          # one of corpus.NOUNS
retrieval_long_words: '[0, 1]' = 0.0      # chance that a word of a key from the text is one of 2
                                          # or 3 tokens, as the held-out names are
# model (see GPTConfig in model.py)
n_layer: '[1, inf)' = 8
n_head: '[1, inf)' = 4
n_kv_head: '[1, inf)' = None
n_embd: '[2, inf)' = 128
dropout: '[0, 1)' = 0.0
bias = False
layer_pattern = 'SSSN'
sliding_window: '[1, inf)' = 256
rope_theta: '(1, inf)' = 10000.0
qk_norm = False
nope_temperature: '[0, inf)' = 0.0        # length-dependent temperature of the 'N' layers' queries
                                          # (model.py); 0 = off
nope_temperature_floor: '[1, inf)' = 1
# AdamW with warmup, then cosine decay to min_lr
learning_rate: '(0, inf)' = 2e-3
max_iters: '[1, inf)' = 100
weight_decay: '[0, inf)' = 0.1
beta1: '[0, 1)' = 0.9
beta2: '[0, 1)' = 0.95
grad_clip: '[0, inf)' = 1.0               # clip the gradient norm at this value; 0 = off
warmup_iters: '[0, inf)' = 10
lr_decay_iters: '[0, inf)' = 0            # 0 = max_iters
min_lr: '[0, inf)' = 2e-4
embedding_lr_scale: '(0, inf)' = 1.0      # the token embedding's learning rate against the rest's
                                          # (model.py)
# system
device = 'auto'                           # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'                            # 'auto': bfloat16 where the GPU has it, float32 on CPU
                                          # (bf16 is slower there)
compile = None                            # torch.compile; None = on CUDA only (on the 2-core CPU it
                                          # compiled for 50 s and gained nothing)
backend = 'auto'                          # DDP backend: 'auto' = nccl on CUDA, gloo on CPU
fsdp = False                              # under torchrun: shard the weights, gradients and AdamW's
                                          # state over the processes (FSDP2) instead of giving each
                                          # a copy (DDP): for models too big for one GPU's memory
activation_checkpointing = False          # recompute each Block in the backward pass instead of
                                          # keeping its activations: less memory at long contexts,
                                          # about a third more compute
seed: '[0, inf)' = 1337
peak_flops: '[0, inf)' = 0.0              # for MFU; 0 = measure this device's matmul peak at
                                          # start-up
# -----------------------------------------------------------------------------
settings = configure(globals())  # every setting's final value, stored in checkpoints

# processes, devices, precision
ddp = 'RANK' in os.environ
device, ptdtype = resolve_device(device, dtype)
if ddp:
    auto = 'nccl' if device.startswith('cuda') else 'gloo'
    dist.init_process_group(backend=auto if backend == 'auto' else backend)
    rank, local_rank, world = dist.get_rank(), int(os.environ['LOCAL_RANK']), dist.get_world_size()
    if device.startswith('cuda'):
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
else:
    rank, world = 0, 1
master = rank == 0
if fsdp and not ddp:
    fail("fsdp=True shards the model over processes: run under torchrun (torchrun --standalone "
         "--nproc_per_node=N train.py ...)")
if fsdp and ptdtype == torch.float16:
    fail("fsdp=True trains in bfloat16 or float32 (float16's loss scaling is not wired to FSDP): "
         "set --dtype=bfloat16")
if gradient_accumulation_steps % world:
    fail(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the "
         f"{world} processes")
accum_per_rank = gradient_accumulation_steps // world
device_type = device.split(':')[0]
autocast = (nullcontext() if ptdtype == torch.float32
            else torch.autocast(device_type=device_type, dtype=ptdtype))
torch.manual_seed(seed)
if device_type == 'cpu':
    keep_freed_memory()  # see common.py: a CPU step is much faster without page-faulting the logits
                         # back in
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

# stages: from which iteration on the text has which context and micro-batch, and the retrieval
# sequences theirs (0, 0: none) and their share in one wording. A config writes each as a tuple in
# this order; train.py reads them by name.
Stage = namedtuple('Stage', 'from_iter block_size batch_size retrieval_length retrieval_batch '
                            'same_wording')
if stages:
    stages = tuple(Stage(*s, *(0, 0, 0.0)[len(s) - 3:])
                   if type(s) is tuple and len(s) in (3, 5, 6)
                   and all(type(v) is int and v >= 0 for v in s[:5])
                   and (len(s) < 6 or type(s[5]) in (int, float) and 0 <= s[5] <= 1)
                   else s for s in stages)
    if not all(type(s) is Stage and s.block_size > 0 and s.batch_size + s.retrieval_batch > 0
               and (s.retrieval_length > 0 or not s.retrieval_batch) for s in stages) \
            or [s.from_iter for s in stages] != sorted({s.from_iter for s in stages}) \
            or stages[0].from_iter != 0:
        fail(f"stages={settings['stages']} must be ((0, block_size, batch_size[, retrieval_length, "
             f"retrieval_batch[, same_wording]]), (from_iter, ...), ...) with increasing "
             f"from_iter, positive lengths, a sequence in every stage and same_wording in [0, 1]")
    last = stages[-1]  # the model's training length: the longest sequence of the last stage
    block_size = max(last.block_size if last.batch_size else 0,
                     last.retrieval_length if last.retrieval_batch else 0)
else:
    stages = (Stage(0, block_size, batch_size, 0, 0, 0.0),)
if dataset == 'recall' and any(s.retrieval_batch for s in stages):
    fail("dataset='recall' has no retrieval sequences of text: give stages of three numbers")


def stage_at(it):
    """The Stage of iteration it."""
    return next(s for s in reversed(stages) if it >= s.from_iter)


def log(message):
    if master:
        tqdm.write(message)
        sys.stdout.flush()  # one line at a time, also into a pipe or a file


# -----------------------------------------------------------------------------
# data: random windows of block_size + 1 tokens from the concatenated documents, and beside them,
# where a stage asks for them, synthetic retrieval sequences (corpus.py) whose only targets are the
# answers
data_dir = os.path.join(DATA, dataset)
meta_path = os.path.join(data_dir, 'meta.json')
if dataset == 'recall':
    meta = dict(vocab_size=RECALL_VOCAB, tokenizer=None)
    if min(s.block_size for s in stages) < 6:
        fail("a recall sequence needs at least 6 tokens (one pair): raise block_size")
elif not os.path.exists(meta_path):
    if dataset != 'shakespeare':
        fail(f"dataset {dataset!r} not found in {data_dir}: run python prepare_data.py "
             f"--input=PATH --name={dataset}")
    if master:  # runs started side by side (reproduce.py) prepare it once: the first to take the
                # lock prepares, the others wait for it, then find meta.json
        os.makedirs(DATA, exist_ok=True)
        with open(os.path.join(DATA, 'shakespeare.lock'), 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.exists(meta_path):
                prepare(builtin_corpus(), 'shakespeare')
    if ddp:
        dist.barrier()
if dataset != 'recall':
    with open(meta_path) as f:
        meta = json.load(f)
    enc = get_tokenizer(meta['tokenizer'])
    for split in ('train', 'val'):
        if meta[f'{split}_tokens'] <= max(max(s.block_size,
                                              s.retrieval_length) for s in stages) + 1:
            fail(f"{split}.bin of {dataset!r} holds {meta[f'{split}_tokens']} tokens, too few for "
                 f"block_size={block_size}")


def to_device(t):
    t = torch.from_numpy(t)
    return t.pin_memory().to(device, non_blocking=True) if device_type == 'cuda' else t.to(device)


def recall_pairs_at(T):
    """Pairs per recall sequence of T tokens: recall_pairs, or as many as fit (a dense haystack) in
    a short stage."""
    return min(recall_pairs, (T - 2) // 4)


def get_batch(split, n, rng, T):
    """n sequences (n, T) of inputs and targets, drawn with the numpy Generator rng."""
    if dataset == 'recall':  # fresh sequences every time: a fixed set would be memorised
        x, y, _ = recall_batch(rng, n, T, recall_pairs_at(T))
        return to_device(x), to_device(y)
    data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=token_dtype(meta),
                     mode='r')  # reopened: no leak
    starts = rng.integers(0, len(data) - T - 1, n)
    seqs = to_device(np.stack([data[s:s + T + 1] for s in starts]).astype(np.int64))
    return seqs[:, :-1], seqs[:, 1:]


def get_retrieval_batch(split, n, rng, T, same_wording):
    """n retrieval sequences (n, T) of inputs and targets, the targets -1 but at the answers' value
    tokens; same_wording of those with several needles in one wording."""
    data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=token_dtype(meta), mode='r')
    try:
        draws = [retrieval_sequence(enc, data, T + 1, rng, retrieval_needles,
                                    distractors=retrieval_distractors,
                                    same_wording=same_wording,
                                    shared_word=retrieval_shared_word,
                                    score_last=retrieval_score_last,
                                    text_nouns=retrieval_text_nouns,
                                    long_words=retrieval_long_words)[:2] for _ in range(n)]
        seqs, scored = map(np.stack, zip(*draws))
    except ValueError as e:
        fail(f"{e}: raise the retrieval length in stages")
    return to_device(seqs[:, :-1]), to_device(np.where(scored[:, 1:], seqs[:, 1:], -1))


# -----------------------------------------------------------------------------
# model, optimizer, and the state of a resumed run
# the model's settings are GPTConfig's fields of the same names, and the data's vocabulary
model_args = {f.name: globals()[f.name] for f in fields(GPTConfig) if f.name in settings}
model_args['vocab_size'] = meta['vocab_size']
# what may change when a run resumes: the long-context stage changes context, window and theta
RESUMABLE_CHANGES = ('block_size', 'sliding_window', 'rope_theta', 'dropout')
iter_num, best_val_loss, checkpoint = 0, float('inf'), None
ckpt_path = os.path.join(out_dir, 'ckpt.pt')
if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    fail(f"--out_dir={out_dir} is a file: give a directory (it is made if missing)")
if os.path.exists(ckpt_path) and not os.path.isfile(ckpt_path):
    fail(f"{ckpt_path} is not a file: remove it, or set another --out_dir")
if init_from == 'scratch' and os.path.exists(ckpt_path):  # never overwrite a model this run did not
                                                          # make
    try:
        old = torch.load(ckpt_path, map_location='cpu', weights_only=True)
        what = f"a model at iteration {old['iter_num']}, val loss {old['best_val_loss']:.4f}"
    except Exception:
        what = "not a checkpoint train.py wrote"
    fail(f"{ckpt_path} already exists ({what}): continue it with --init_from=resume, train in "
         f"another --out_dir, or remove it to start afresh")
if init_from == 'resume':
    if not os.path.exists(ckpt_path):
        fail(f"no checkpoint at {ckpt_path} to resume: train one first, or set --out_dir")
    checkpoint = load_model(out_dir)[1]  # the settings, weights and state; the model is rebuilt
                                         # below
    lacking = [k for k in ('optimizer', 'iter_num', 'best_val_loss', 'rng') if k not in checkpoint]
    if lacking:
        fail(f"{ckpt_path} holds weights but no training state ({', '.join(lacking)}): it can be "
             f"sampled and evaluated, not resumed; train from scratch in another --out_dir")
    model_args = {**checkpoint['model_args'], **model_args}  # with those no setting names
                                                             # (hub.py's)
    for k in model_args:
        saved = checkpoint['model_args'].get(k, getattr(GPTConfig, k, None))
        # a setting as the run that wrote the checkpoint had it changes nothing (a model fine-tuned
        # from init_from=<folder> keeps its own window and theta, whatever train.py's defaults say)
        if model_args[k] not in (saved, checkpoint['config'].get(k, saved)):
            if k in RESUMABLE_CHANGES:
                log(f"resume: {k} {saved} -> {model_args[k]}")
                continue
            if model_args[k] is not None:
                log(f"resume: keeping the checkpoint's {k}={saved!r} (asked for {model_args[k]!r})")
        model_args[k] = saved
    if checkpoint['config'].get('dataset', dataset) != dataset:
        log(f"resume: dataset {checkpoint['config']['dataset']} -> {dataset}")
    iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
elif init_from != 'scratch':  # a transformers checkpoint to fine-tune (hub.py): its settings make
                              # the model
    try:
        folder = local_folder(init_from)
        if os.path.realpath(str(meta['tokenizer'])) != os.path.realpath(folder):
            fail(f"dataset {dataset!r} is tokenized with {meta['tokenizer']}, not {init_from}'s "
                 f"own tokenizer: run python prepare_data.py --tokenizer={folder} --name=NAME and "
                 f"train with --dataset=NAME")
        # the weights loaded once, into the model that trains; this run's context and dropout
        model = GPT.from_pretrained(folder, block_size=block_size, dropout=dropout)
    except ValueError as e:
        fail(str(e))
    model_args = asdict(model.config)
    log(f"init_from={init_from}: its own settings "
        f"({', '.join(f'{k}={v}' for k, v in model_args.items())})")
try:
    gptconf = GPTConfig(**model_args)
except ValueError as e:
    fail(str(e))
if init_from in ('scratch', 'resume'):  # an imported model is built above, with its weights
    model = GPT(gptconf)
model = model.to(device)
if checkpoint is not None:
    model.load_state_dict(checkpoint['model'])
raw_model = model  # the uncompiled, unwrapped module: what checkpoints store
compiling = compile or (compile is None and device_type == 'cuda')
if activation_checkpointing:  # (FSDP's hooks stay outside: a Block's weights are gathered first)
    for block in model.transformer.h:
        block.forward = functools.partial(torch.utils.checkpoint.checkpoint, block.forward,
                                          use_reentrant=False)
if fsdp:
    # FSDP2: each Block's weights, gradients and optimizer state are split over the processes, its
    # weights gathered just before its forward and backward, its gradients reduce-scattered after;
    # the root holds the rest (embedding, final norm). Compute in ptdtype, gradients reduced in
    # float32. The module stays itself (a sharded GPT): raw_model is model.
    try:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
            set_optimizer_state_dict)
        from torch.distributed.fsdp import (MixedPrecisionPolicy, fully_shard,
                                            register_fsdp_forward_method)
    except ImportError:
        fail(f"fsdp=True needs torch 2.6 or later (this is {torch.__version__}): pip install -U "
             f"torch")
    policy = MixedPrecisionPolicy(param_dtype=ptdtype, reduce_dtype=torch.float32)
    if compiling:
        log("compiling each Block (a minute or so)...")
    for block in model.transformer.h:
        if compiling:
            block.compile()  # in place: the parameters keep their names
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    register_fsdp_forward_method(model, 'hidden')  # estimate_loss calls hidden(), not forward()
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type,
                                       embedding_lr_scale)
# ckpt.pt holds AdamW's state as one process's optimizer.state_dict() has it, by parameter index;
# FSDP's state dict functions key it by name
names = {id(p): n for n, p in raw_model.named_parameters()}
by_index = [names[id(p)] for group in optimizer.param_groups for p in group['params']]


def rekeyed(state, key):
    """An optimizer state dict with its parameters' keys mapped through key (index <-> name)."""
    return dict(state={key[k]: v for k, v in state['state'].items()},
                param_groups=[{**g, 'params': [key[k] for k in g['params']]}
                              for g in state['param_groups']])


data_rng = np.random.default_rng(seed)  # the same on every process: all draw the global batch, each
                                        # takes its part
if checkpoint is not None:
    try:
        if fsdp:  # each process keeps its shard of the whole state
            set_optimizer_state_dict(model, optimizer, rekeyed(checkpoint['optimizer'], by_index),
                                     options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(checkpoint['optimizer'])
        data_rng.bit_generator.state = checkpoint['rng']['data']
        torch.set_rng_state(checkpoint['rng']['torch'].cpu())
        if device_type == 'cuda' and checkpoint['rng'].get('cuda') is not None:
            torch.cuda.set_rng_state(checkpoint['rng']['cuda'].cpu())
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        fail(f"{ckpt_path}'s training state does not restore ({type(e).__name__}: "
             f"{str(e).splitlines()[0] if str(e) else ''}): "
             f"train from scratch in another --out_dir")
checkpoint = None  # free the memory
scaler = torch.amp.GradScaler(enabled=(ptdtype == torch.float16))
if compiling and not fsdp:
    log("compiling the model (a minute or so)...")
    model = torch.compile(model)
if ddp and not fsdp:
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)
if not peak_flops:
    peak_flops = matmul_peak_flops(torch.device(device), ptdtype,
                                   n=8192 if device_type == 'cuda' else 2048)


def get_lr(it):
    decay_iters = lr_decay_iters or max_iters
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


@torch.no_grad()
def estimate_loss(stage):
    """Mean loss over eval_iters batches (B, T) of plain text, the same batches every time; for
    dataset='recall' also the accuracy of the answers (argmax) on the val batches. Where the stage
    trains retrieval sequences, also their answers' loss and exact match (every value token right,
    teacher-forced) on eval_iters batches (BR, R) of retrieval sequences in the val text, drawn as
    the stage draws them."""
    T, B = stage.block_size, max(stage.batch_size, 1)
    R, BR = stage.retrieval_length, stage.retrieval_batch
    model.eval()
    out = {}
    if BR:
        rng, losses, right = np.random.default_rng(seed + 2), [], []
        for _ in range(eval_iters):
            X, Y = get_retrieval_batch('val', BR, rng, R, stage.same_wording)
            scored = Y != -1
            with autocast:
                # (answer tokens, vocab)
                logits = raw_model.lm_head(raw_model.hidden(X)[scored]).float()
            losses.append(F.cross_entropy(logits, Y[scored]).item())
            wrong = torch.zeros_like(scored)
            wrong[scored] = logits.argmax(-1) != Y[scored]
            # an answer is a run of scored targets, right when none of them is wrong
            scored, wrong = scored.flatten().cpu().numpy(), wrong.flatten().cpu().numpy()
            starts = np.flatnonzero(scored & ~np.r_[False, scored[:-1]])
            right += list(~np.logical_or.reduceat(wrong, starts))
        out['answer_loss'], out['answer_exact'] = float(np.mean(losses)), float(np.mean(right))
    for split in ('train', 'val'):
        rng = np.random.default_rng(seed + 1 + (dataset == 'recall' and split == 'val'))
        losses, right, asked = [], 0, 0
        for _ in range(eval_iters):
            X, Y = get_batch(split, B, rng, T)
            with autocast:
                if dataset == 'recall':  # one pass: the logits (a 256-token vocabulary) give the
                                         # loss and the answers
                    logits = raw_model(X)[0].float()
                    loss = F.cross_entropy(logits.flatten(0, 1), Y.flatten(), ignore_index=-1)
                    right += (logits.argmax(-1) == Y)[Y != -1].sum().item()
                    asked += (Y != -1).sum().item()
                else:
                    loss = raw_model(X, Y)[1]
            losses.append(loss.item())
        out[split] = sum(losses) / len(losses)
        if dataset == 'recall':
            out[f'{split}_accuracy'] = right / asked
    model.train()
    return out


def save_checkpoint():
    """ckpt.pt, written by the master. Under FSDP every process calls it: each sends its shards,
    and the master receives the whole model and optimizer state, as one process would hold them."""
    if fsdp:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)  # to the master's CPU
        weights = get_model_state_dict(model, options=options)
        adamw = get_optimizer_state_dict(model, optimizer, options=options)
        if not master:
            return
        adamw = rekeyed(adamw, {name: i for i, name in enumerate(by_index)})
    else:
        weights, adamw = raw_model.state_dict(), optimizer.state_dict()
    state = dict(model=weights, optimizer=adamw,
                 model_args=asdict(gptconf), iter_num=iter_num, best_val_loss=best_val_loss,
                 config=settings, tokenizer=meta['tokenizer'],
                 rng=dict(data=data_rng.bit_generator.state, torch=torch.get_rng_state(),
                          cuda=torch.cuda.get_rng_state() if device_type == 'cuda' else None))
    os.makedirs(out_dir, exist_ok=True)
    write_atomic(ckpt_path, lambda tmp: torch.save(state, tmp))  # a crash never leaves a
                                                                 # half-written checkpoint


# -----------------------------------------------------------------------------
# the training loop metrics.jsonl holds each iteration once: a run from scratch starts it afresh; a
# resumed run first drops the lines past its checkpoint (logged by the run that stopped after it)
# and logs those iterations again
resumed_at = iter_num if init_from == 'resume' else None
if master:
    os.makedirs(out_dir, exist_ok=True)
    metrics_path = os.path.join(out_dir, 'metrics.jsonl')
    kept = []
    if resumed_at is not None and os.path.exists(metrics_path):
        for line in open(metrics_path):
            try:
                if json.loads(line)['iter'] <= resumed_at:
                    kept.append(line if line.endswith('\n') else line + '\n')
            except (ValueError, KeyError, TypeError):
                pass  # a line cut short by a kill
    write_atomic(metrics_path, lambda tmp: open(tmp, 'w').writelines(kept))
    metrics = open(metrics_path, 'a')
log(f"{sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M parameters, layers "
    f"{gptconf.layer_kinds()}, window {gptconf.sliding_window}, context {block_size}; {world} x "
    f"{device} in {str(ptdtype)[6:]}; peak {peak_flops / 1e9:.0f} GFLOP/s (for MFU)")
bar = tqdm(total=max_iters, initial=iter_num, disable=None if master else True, unit='it',
           dynamic_ncols=True)
model.train()
t0, step_losses, current = time.time(), [], None
while True:
    stage = stage_at(iter_num)
    T, B = stage.block_size, stage.batch_size                # text: B sequences of T tokens
    R, BR = stage.retrieval_length, stage.retrieval_batch    # retrieval sequences: BR of R tokens
    tokens_per_iter = gradient_accumulation_steps * (B * T + BR * R)
    if stage != current:
        current = stage
        log(f"from iter {iter_num}: "
            + (f"context {T}, {gradient_accumulation_steps} x {B} sequences" if B else 'no text')
            + (f", {recall_pairs_at(T)} pairs per sequence" if dataset == 'recall' else '')
            + (f"; retrieval sequences of {R} tokens, {gradient_accumulation_steps} x {BR}, "
               f"answers scored" if BR else '')
            + (f", {stage.same_wording:g} of those with several needles in one wording"
               if BR and stage.same_wording else '')
            + f"; {tokens_per_iter:,} tokens/iter")
        t0, step_losses = time.time(), []
    lr = get_lr(iter_num)
    for group in optimizer.param_groups:
        group['lr'] = lr * group['lr_scale']
    # (done before the checkpoint; under FSDP by every process, each of which holds a shard)
    if (iter_num % eval_interval == 0 or iter_num == max_iters) and iter_num != resumed_at \
            and (master or fsdp):
        t_eval = time.time()
        losses = estimate_loss(stage)
        best_val_loss = min(best_val_loss, losses['val'])
        log(f"eval {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
            + (f", val accuracy {losses['val_accuracy']:.3f}" if dataset == 'recall' else '')
            + (f"; retrieval at {R}: answer loss {losses['answer_loss']:.4f}, exact match "
               f"{losses['answer_exact']:.3f}"
               if BR else ''))
        if master:
            metrics.write(json.dumps(dict(iter=iter_num, train_loss=losses['train'],
                                          val_loss=losses['val'],
                                          **{k: v for k, v in losses.items()
                                             if k.startswith(('val_', 'answer'))})) + '\n')
            metrics.flush()
        if not math.isfinite(losses['val']):
            if master:
                fail(f"the val loss is {losses['val']} at iteration {iter_num}: stopped; the last "
                     f"good checkpoint is {ckpt_path}")
            sys.exit(2)
        if iter_num > 0:
            save_checkpoint()
        t0 += time.time() - t_eval  # evaluation is not training time
    if iter_num >= max_iters:
        break

    # one optimizer step over the global batch; every process draws it, each runs its own share. The
    # text and the retrieval sequences have their own lengths, so each micro-step is one pass over
    # each (weighted)
    passes = []
    draw_retrieval = functools.partial(get_retrieval_batch, same_wording=stage.same_wording)
    for kind, n, get, length, weight in (('text', B, get_batch, T, 1.0),
                                         ('answers', BR, draw_retrieval, R, retrieval_weight)):
        if n:
            X_all, Y_all = get('train', gradient_accumulation_steps * n, data_rng, length)
            passes += [(kind, weight, X_all[k:k + n], Y_all[k:k + n])
                       for k in ((m * world + rank) * n for m in range(accum_per_rank))]
    loss_sum = {}
    for j, (kind, weight, X, Y) in enumerate(passes):
        if fsdp:  # reduce the gradients on the last pass only
            model.set_requires_gradient_sync(j == len(passes) - 1)
        elif ddp:
            model.require_backward_grad_sync = j == len(passes) - 1
        with autocast:
            _, loss = model(X, Y)
        loss_sum[kind] = loss_sum.get(kind, 0.0) + loss.detach()
        scaler.scale(weight * loss / accum_per_rank).backward()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                               grad_clip or float('inf'))  # 0 = no clipping
    if fsdp:
        grad_norm = grad_norm.full_tensor()  # the norm over every shard, as a DTensor
    if not torch.isfinite(grad_norm) and ptdtype != torch.float16:  # float16: the scaler skips the
                                                                    # step and rescales
        # a nan or inf loss makes every process's (all-reduced) gradient norm non-finite: all stop
        # here, before the optimizer would write it into the weights, and the last checkpoint stays
        # as it was
        message = (f"the loss is {sum(loss_sum.values()).item() / accum_per_rank:.4g} and the "
                   f"gradient norm {grad_norm.item():.4g} at iteration {iter_num}: stopped without "
                   f"updating; the last good checkpoint is "
                   f"{ckpt_path if os.path.exists(ckpt_path) else '(none yet)'}; lower "
                   f"--learning_rate or raise --warmup_iters")
        if master:
            fail(message)
        sys.exit(2)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    zero = torch.tensor(0.0, device=device)
    step_losses.append(torch.stack([loss_sum.get(kind, zero) / accum_per_rank
                                    for kind in ('text', 'answers')]))
    iter_num += 1
    bar.update(1)

    if iter_num % log_interval == 0 or iter_num == max_iters:
        losses = torch.stack(step_losses).mean(0)  # (text, answers): the means over the last steps'
                                                   # global batches
        if ddp:
            dist.all_reduce(losses)  # summed over processes (gloo has no AVG)
            losses /= world
        text_loss, answer_loss = losses.tolist()
        dt = (time.time() - t0) / len(step_losses)
        tok_s = tokens_per_iter / dt
        # MFU: achieved FLOP/s over this device's matmul peak (nanoGPT assumes an A100's 312e12),
        # per process. A retrieval sequence computes the output layer at its answers only: its
        # tokens cost the rest.
        text_flops = B * T * flops_per_token(raw_model, T)
        head = 6 * raw_model.lm_head.weight.numel()  # the output layer's FLOPs per token
        answer_flops = BR * R * (flops_per_token(raw_model, R) - head) if BR else 0
        mfu = gradient_accumulation_steps * (text_flops + answer_flops) / world / dt / peak_flops
        gpu_mem = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
                   if device_type == 'cuda' else '')
        shown = (([f"loss {text_loss:.4f}"] if B else [])
                 + ([f"answer loss {answer_loss:.4f}"] if BR else []))
        log(f"iter {iter_num}: {', '.join(shown)}, lr {lr:.2e}, {tok_s:,.0f} tok/s, mfu "
            f"{100 * mfu:.1f}%, {1000 * dt:.0f} ms/iter{gpu_mem}")
        bar.set_postfix(loss=f"{text_loss if B else answer_loss:.3f}", tok_s=f"{tok_s:,.0f}",
                        mfu=f"{100 * mfu:.1f}%")
        if master:
            metrics.write(json.dumps(dict(iter=iter_num, **({'loss': text_loss} if B else {}),
                                          **({'answer_loss': answer_loss} if BR else {}),
                                          lr=lr, tokens_per_s=tok_s, mfu=mfu)) + '\n')
            metrics.flush()
        t0, step_losses = time.time(), []
bar.close()
if ddp:
    dist.barrier()  # let the master finish its last evaluation and checkpoint
    dist.destroy_process_group()
