# Summarises bench/run's raw CSV into markdown tables.
#
#   awk -F'\t' -v peers="kernel nftables ..." -v figures="tcp1 ..." \
#       -f bench/report.awk bench/metrics.tsv RESULTS.csv
#
# metrics.tsv (tab-separated) gives the rows; RESULTS.csv (round,figure,peer,metric,value) the
# values. Table 1: per metric and peer, median over rounds with (min–max). Table 2: each tapvs
# mode's median as a ratio of each non-tapvs peer's median (tapfwd included). Table 3 ("per-frame
# cost", the metrics.tsv rows whose direction is "frame"): system calls, context switches and
# process CPU per frame for tapvs and tapfwd, each tapvs median also as a multiple of tapfwd's.
# Written for POSIX awk (mawk).

BEGIN {
    np = split(peers, P, " ")
    nf = split(figures, F, " ")
    for (i = 1; i <= nf; i++) want_fig[F[i]] = 1
    name["kernel"] = "kernel fwd"
    name["nftables"] = "nftables DNAT"
    name["haproxy"] = "HAProxy tcp"
    name["nginx"] = "nginx stream"
    name["tapfwd"] = "bare TAP fwd"
    name["tapvs-nat"] = "tapvs NAT"
    name["tapvs-dr"] = "tapvs DR"
    name["tapvs-fullnat"] = "tapvs FullNAT"
    nm = 0
}

# The metric catalogue (first file, tab-separated, # comments).
FNR == NR {
    if ($0 ~ /^#/ || NF < 5) next
    if (!($1 in want_fig)) next
    nm++
    mfig[nm] = $1; mkey[nm] = $2; mlabel[nm] = $3; mfmt[nm] = $4; mbetter[nm] = $5
    next
}

# The raw results (second file, comma-separated).
{
    n = split($0, c, ",")
    if (n < 5 || c[1] == "round") next
    if (c[4] == "status") { if (c[5] != "ok") failed[c[2] "," c[3]]++; next }
    k = c[2] SUBSEP c[3] SUBSEP c[4]
    cnt[k]++
    val[k, cnt[k]] = c[5] + 0
}

# Sorts val[k, 1..n] in place (insertion sort: n is the number of rounds).
function sortk(k, n,    i, j, t) {
    for (i = 2; i <= n; i++) {
        t = val[k, i]
        for (j = i - 1; j >= 1 && val[k, j] > t; j--) val[k, j + 1] = val[k, j]
        val[k, j + 1] = t
    }
}

function median(k, n) {
    if (n % 2) return val[k, (n + 1) / 2]
    return (val[k, n / 2] + val[k, n / 2 + 1]) / 2
}

function cell(m, p,    k, n) {
    k = mfig[m] SUBSEP p SUBSEP mkey[m]
    n = cnt[k]
    if (n == 0) return "–"
    if (n == 1) return sprintf(mfmt[m], val[k, 1])
    return sprintf(mfmt[m], med[k]) " (" sprintf(mfmt[m], val[k, 1]) "–" sprintf(mfmt[m], val[k, n]) ")"
}

function is_tapvs(p) { return p ~ /^tapvs-/ }

# Peers with a per-frame cost: tapvs in every mode and the bare forwarder.
function has_frames(p) { return is_tapvs(p) || p == "tapfwd" }

END {
    for (k in cnt) { sortk(k, cnt[k]); med[k] = median(k, cnt[k]) }

    # Table 1: medians with min–max.
    printf "| figure |"
    for (i = 1; i <= np; i++) printf " %s |", name[P[i]]
    printf "\n|---|"
    for (i = 1; i <= np; i++) printf "---:|"
    printf "\n"
    for (m = 1; m <= nm; m++) {
        if (mbetter[m] == "frame") continue
        printf "| %s |", mlabel[m]
        for (i = 1; i <= np; i++) printf " %s |", cell(m, P[i])
        printf "\n"
    }

    # Table 2: tapvs ÷ peer, medians.
    nt = 0; no = 0
    for (i = 1; i <= np; i++) if (is_tapvs(P[i])) T[++nt] = P[i]; else O[++no] = P[i]
    if (nt > 0 && no > 0) {
        printf "\ntapvs median ÷ peer median (rates: higher is better for tapvs; latency and CPU: lower is better)\n\n"
        printf "| figure | tapvs |"
        for (j = 1; j <= no; j++) printf " ÷ %s |", name[O[j]]
        printf "\n|---|---|"
        for (j = 1; j <= no; j++) printf "---:|"
        printf "\n"
        for (m = 1; m <= nm; m++) {
            if (mbetter[m] == "-" || mbetter[m] == "frame") continue
            for (t = 1; t <= nt; t++) {
                kt = mfig[m] SUBSEP T[t] SUBSEP mkey[m]
                printf "| %s | %s |", mlabel[m], substr(name[T[t]], 7)
                for (j = 1; j <= no; j++) {
                    ko = mfig[m] SUBSEP O[j] SUBSEP mkey[m]
                    if (cnt[kt] == 0 || cnt[ko] == 0 || med[ko] == 0) printf " – |"
                    else printf " %.2f |", med[kt] / med[ko]
                }
                printf "\n"
            }
        }
    }

    # Table 3: per-frame cost of tapvs and tapfwd; tapvs cells also as a multiple of tapfwd.
    nq = 0; fwd = 0
    for (i = 1; i <= np; i++) if (has_frames(P[i])) { Q[++nq] = P[i]; if (P[i] == "tapfwd") fwd = 1 }
    nfr = 0
    for (m = 1; m <= nm; m++) if (mbetter[m] == "frame") nfr++
    if (nq > 0 && nfr > 0) {
        printf "\nper-frame cost (frames = frames the process read from its TAPs; lower is better"
        if (fwd) printf "; ×N = tapvs median ÷ bare TAP fwd median"
        printf ")\n\n| figure |"
        for (j = 1; j <= nq; j++) printf " %s |", name[Q[j]]
        printf "\n|---|"
        for (j = 1; j <= nq; j++) printf "---:|"
        printf "\n"
        for (m = 1; m <= nm; m++) {
            if (mbetter[m] != "frame") continue
            kf = mfig[m] SUBSEP "tapfwd" SUBSEP mkey[m]
            printf "| %s |", mlabel[m]
            for (j = 1; j <= nq; j++) {
                kt = mfig[m] SUBSEP Q[j] SUBSEP mkey[m]
                printf " %s", cell(m, Q[j])
                if (fwd && is_tapvs(Q[j]) && cnt[kt] > 0 && cnt[kf] > 0 && med[kf] > 0)
                    printf " (×%.1f)", med[kt] / med[kf]
                printf " |"
            }
            printf "\n"
        }
    }

    nfail = 0
    for (f in failed) nfail++
    if (nfail > 0) {
        printf "\nFailed measurements (figure,peer: count; see the log lines above):"
        for (f in failed) printf " %s: %d;", f, failed[f]
        printf "\n"
    }
}
