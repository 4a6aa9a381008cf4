"""The report's interactions section: the shared fraction beside both floors and the ceiling, order
histograms of shared and model-specific interactions, and one worked prompt."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

TITLE = "Interactions: do the models build the prediction from the same parts of the prompt?"
INTRO = ("<p>Prompts are sentence starts from held-out documents where both models' top-1 next word agrees. "
         "For {n} words of each prompt (non-stopwords, drawn at random) and every subset S of them, v(S) is the "
         "target's log-odds with the words outside S masked (their tokens get the <b>{base}</b> baseline "
         "embedding). v is split into sparse AND and OR interactions (Chen, Lou et al. 2024). An interaction is "
         "<b>salient</b> when {rule}; two explanations <b>share</b> it when it is salient in both, of the same "
         "kind and subset, with the same sign. <b>Jaccard</b>: shared / salient in either; <b>share of |I|</b>: the "
         "part of all |I| that the shared interactions carry. Floors: the random-init network against the other "
         "model on the same prompts, and the two models on <i>different</i> prompts (words matched by position). "
         "Ceiling: each model against itself under the <b>{ceil}</b> baseline (the noise of the definition). "
         "<b>Cancellation</b> 1 &minus; |&Sigma;I| / &Sigma;|I| within a set (0: one sign). CIs: 95%, "
         "bootstrap over documents.</p>")
COLS = ["comparison", "prompts", "jaccard", "jaccard_lo", "jaccard_hi", "share", "share_lo", "share_hi",
        "order_shared", "order_specific", "order_gap", "order_gap_lo", "order_gap_hi", "cancel_shared",
        "cancel_specific", "cancel_gap", "cancel_gap_lo", "cancel_gap_hi"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def order_plot(orders: pd.DataFrame, comparison: str, path: Path) -> Path:
    """Bars of the share of shared and of model-specific salient interactions at each order."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    g = orders[orders["comparison"] == comparison]
    top = int(g["order"].max()) if len(g) else 1
    x = np.arange(1, top + 1)
    for i, kind in enumerate(("shared", "specific")):
        k = g[g["kind"] == kind].set_index("order")["count"].reindex(x, fill_value=0)
        tot = max(int(k.sum()), 1)
        ax.bar(x + (i - 0.5) * 0.4, k.to_numpy() / tot, width=0.4, label=f"{kind} (n={int(k.sum())})")
    ax.set_xlabel("order |S|")
    ax.set_ylabel("fraction of salient interactions")
    ax.set_xticks(x)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def worked_prompt(inter: pd.DataFrame, prompts: pd.DataFrame, cons: pd.DataFrame, ka: str, kb: str, base: str,
                  top: int = 6) -> str:
    """The prompt with the most shared salient interactions: its words and each model's top interactions."""
    pair = cons[cons["comparison"] == "pair"]
    if pair.empty:
        return ""
    p = int(pair.sort_values(["n_shared", "jaccard"], ascending=False, kind="stable").iloc[0]["prompt"])
    shared = set(pair[pair["prompt"] == p].iloc[0]["shared"])
    row = prompts[prompts["prompt"] == p].iloc[0]
    text = (f"<p><b>Worked prompt {p}</b> (document {int(row['doc'])}): &ldquo;{html.escape(row['text'])}&rdquo; "
            f"&rarr; <b>{html.escape(str(row['target_word']))}</b>; words: {html.escape(', '.join(row['words']))}.</p>")
    tabs = []
    for key in (ka, kb):
        g = inter[(inter["prompt"] == p) & (inter["model"] == key) & (inter["baseline"] == base) & (inter["S"] > 0)]
        long = pd.concat([g.assign(kind="and", I=g["and_I"]), g.assign(kind="or", I=g["or_I"])], ignore_index=True)
        long = long.iloc[np.argsort(-long["I"].abs().to_numpy(), kind="stable")[:top]]
        tabs.append(pd.DataFrame({"model": key, "kind": long["kind"], "words": long["words"], "order": long["order"],
                                  "I": long["I"], "shared": [f"{k}:{s}" in shared for k, s in zip(long["kind"], long["S"])]}))
    from saematch.report import html as H

    return text + H.table(pd.concat(tabs, ignore_index=True))


def section(ctx: Any, out: Path) -> tuple[str, str, list[Path]]:
    from saematch.artifacts import read_json
    from saematch.graph.plan import build_plan
    from saematch.report import html as H

    cfg = ctx.cfg.interactions
    rule = (f"|I| &gt; {cfg.salient_fraction:g} &times; |v(N) &minus; v(&empty;)|" if cfg.salient == "fraction"
            else f"it is among the top {cfg.top_k} by |I|")
    body, figs = INTRO.format(n=cfg.n_words, base=cfg.baseline, ceil=cfg.ceiling_baseline, rule=rule), []
    for node in build_plan(ctx.cfg).stage("interactions"):
        ka, kb = node.key
        d = Path(node.path)
        s = read_json(d / "summary.json")
        pooled = pd.DataFrame(s["pooled"])
        orders = pd.read_parquet(d / "orders.parquet")
        body += (f"<h3>{html.escape(ka)} vs {html.escape(kb)}</h3><p>{s['prompts']} prompts from {s['documents']} "
                 f"held-out documents ({s['selection']['sentences_tried']} sentences tried), {s['n_words']} words each; "
                 f"{s['forwards']} masked forward passes"
                 + (f", {s['forwards_per_second']:.1f} per second" if s.get("forwards_per_second") else "")
                 + f". Split: mean L1 of the interactions {s['split']['l1_raw_mean']:.2f} (AND only) &rarr; "
                 f"{s['split']['l1_split_mean']:.2f} (AND&ndash;OR), in units of |v(N) &minus; v(&empty;)|; largest "
                 f"offset {s['split']['max_offset_rel']:.3f} of it.</p>"
                 + H.table(pooled[[c for c in COLS if c in pooled]]))
        for comp in ("pair", "floor_random"):
            if comp in set(orders["comparison"]):
                p = order_plot(orders, comp, Path(out) / f"interactions_orders_{ka}__{kb}_{comp}.png")
                figs.append(p)
                body += H.img(p, f"{comp}: order |S| of the shared and of the model-specific salient interactions, "
                                 f"pooled over {s['prompts']} prompts (fractions of each kind)")
        body += worked_prompt(pd.read_parquet(d / "interactions.parquet"), pd.read_parquet(d / "prompts.parquet"),
                              pd.read_parquet(d / "consistency.parquet"), ka, kb, cfg.baseline)
    return TITLE, body, figs
