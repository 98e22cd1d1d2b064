"""The CMN report: a Markdown table of FP / 1-bit / 8-bit / CMN and PNG plots."""

import os


def table(r: dict) -> str:
    dep = next((c.get("deploy") for c in r["cascades"] if c.get("deploy")), None)
    fp_ips = next((c.get("fp_images_per_s") for c in r["cascades"] if c.get("fp_images_per_s")), None)
    costs = r["costs"]
    lines = [f"| model | test top-1 | avg bits (CMN) | BOPs (G) | exit rate | images/s ({r['deploy_device']}) |",
             "|---|---:|---:|---:|---:|---:|",
             f"| full precision | {r['fp_acc']:.4f} | {r['fp_avg_bits']:.2f} | {costs['fp']['bops'] / 1e9:.3f} | - | "
             f"{fp_ips:.0f} |" if fp_ips else
             f"| full precision | {r['fp_acc']:.4f} | {r['fp_avg_bits']:.2f} | {costs['fp']['bops'] / 1e9:.3f} | - | - |",
             f"| 1-bit | {r['lo_acc']:.4f} | {r['lo_avg_bits']:.2f} | {costs['lo']['bops'] / 1e9:.3f} | 1.000 | - |",
             f"| 8-bit | {r['hi_acc']:.4f} | {r['hi_avg_bits']:.2f} | {costs['hi']['bops'] / 1e9:.3f} | 0.000 | - |"]
    for c in r["cascades"]:
        ips = f"{c['deploy']['images_per_s']:.0f}" if c.get("deploy") else "-"
        lines.append(f"| 8-bit, {c['prune_ratio'] * 100:.0f} % {c['method']} pruned | {c['hi_pruned_acc']:.4f} | "
                     f"{c['hi_pruned_avg_bits']:.2f} | {c['hi_pruned_bops'] / 1e9:.3f} | 0.000 | - |")
        lines.append(f"| CMN ({c['method']}; tau {c['tau'] * 100:.0f} %, T {c['threshold']:.3f}) | {c['cascade_acc']:.4f} | "
                     f"{c['avg_bits']:.2f} (real {c['avg_bits_real']:.2f}) | {c['bops'] / 1e9:.3f} | "
                     f"{c['exit_rate']:.3f} | {ips} |")
    out = "\n".join(lines)
    if dep:
        base = next((c.get("fp_baseline") for c in r["cascades"] if c.get("fp_baseline")), "fp32")
        ratio = f" ({dep['images_per_s'] / fp_ips:.2f}x the full-precision model, {base})" if fp_ips else ""
        out += (f"\n\nDeploy cascade (torch.ops.cmn kernels: {dep['kernels']}) on {r['deploy_device']}: "
                f"{dep['images_per_s']:.0f} images/s{ratio}; test top-1 {dep['accuracy']:.4f}, exit rate "
                f"{dep['exit_rate']:.3f}, predictions equal to the QAT cascade's on "
                f"{dep['agree_with_qat'] * 100:.2f} % of test images; "
                f"{100 * dep.get('between_stages_fraction', 0.0):.1f} % of its time is spent between the stages "
                "(confidence, compaction with its host synchronisation, scatter).")
    out += ("\nAvg bits: operations (MACs x weight bits, sparsity-aware) over the full-precision net's MACs; CMN's "
            "G counts a stage-2 row once, 'real' also charges it for stage 1. eta = "
            f"{r['val_eta']:.4f} ({_eta_text(r)}), search floor {r.get('val_floor', r['val_eta']):.4f}.")
    return out


def plots(r: dict, run_dir: str) -> list[str]:
    """accuracy_vs_bits.png and search.png in ``run_dir``; [] (with a note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    fig, ax = plt.subplots(figsize=(5, 4))
    points = [("FP", r["fp_avg_bits"], r["fp_acc"]), ("1-bit", r["lo_avg_bits"], r["lo_acc"]),
              ("8-bit", r["hi_avg_bits"], r["hi_acc"])]
    points += [(f"CMN ({c['method']})", c["avg_bits"], c["cascade_acc"]) for c in r["cascades"]]
    for label, x, y in points:
        ax.scatter([x], [y])
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("average bits (CMN definition)")
    ax.set_ylabel("test top-1")
    ax.set_title("accuracy vs average bitwidth")
    fig.tight_layout()
    paths.append(os.path.join(run_dir, "accuracy_vs_bits.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    for c in r["cascades"]:
        rows = c["search"]
        idx = list(range(len(rows)))
        a1.plot(idx, [row["G"] / 1e6 for row in rows], marker="o", label=c["method"])
        a2.plot(idx, [row["accuracy"] for row in rows], marker="o", label=c["method"])
    a2.axhline(r["val_eta"], color="gray", linestyle="--", label="eta")
    if r.get("val_floor", r["val_eta"]) < r["val_eta"]:
        a2.axhline(r["val_floor"], color="gray", linestyle=":", label="eta - tolerance")
    a1.set_ylabel("G (M bit-MACs)")
    a2.set_ylabel("val accuracy")
    a2.set_xlabel("search step (tau, phi)")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(run_dir, "search.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def search_table(r: dict) -> str:
    """Every (tau, phi) point Algorithm 1 visited, per pruning method."""
    lines = ["| method | tau (%) | phi (%) | val top-1 | val exit rate | G (M bit-MACs) | avg bits | kept eta |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in r["cascades"]:
        for row in c["search"]:
            lines.append(f"| {c['method']} | {row['tau']} | {row['phi']} | {row['accuracy']:.4f} | "
                         f"{row['exit_rate']:.3f} | {row['G'] / 1e6:.2f} | {row['avg_bits']:.2f} | "
                         f"{'yes' if row['ok'] else 'no'} |")
    return "\n".join(lines)


def _eta_text(r: dict) -> str:
    if r.get("eta_source") == "min":
        return (f"the lower of the full-precision ({r['val_fp_acc']:.4f}) and 8-bit ({r['val_hi_acc']:.4f}) "
                "validation top-1")
    return "full-precision validation top-1"
