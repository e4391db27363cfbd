#!/usr/bin/env python3
"""Independent oracle for the tapvsadm golden files.

Renders listing.json / conns.json (IPv4) and listing6.json / conns6.json (dual stack) with the
ipvsadm 1.31 printf format strings quoted in /work/shared/reference/lvs.md section 1.6
(Python's % operator has C printf semantics; %llu/%u become %d), and ipvsadm's IPv6 rules:
addresses as "[addr]:port" (inet_ntop form) never cut at 33/28 columns, fwmark services as
"FWM  %d" (+ " IPv6"), saved as "-f %d" (+ " -6"), an IPv6 persistence mask as a number
(left out when 128), services sorted as libipvs's ipvs_cmp_services (fwmark, family,
protocol, address, port). It shares no code with adm/src/format.rs. Run from this directory:
    python3 gen.py
"""
import ipaddress
import json

L = json.load(open("listing.json"))
C = json.load(open("conns.json"))
PROTO = {"TCP": 6, "UDP": 17}
SWITCH = {"TCP": "-t", "UDP": "-u"}
FWD_SWITCH = {"Masq": "-m", "Route": "-g", "Local": "-g", "Tunnel": "-i", "FullNat": "-b"}


def largenum(i, exact):
    if exact:
        n = len("%d" % i)
        return "%*d" % (9 if n <= 8 else n + 1, i)
    if i < 100000000:
        return "%9d" % i
    if i < 1000000000:
        return "%8dK" % (i // 1000)
    if i < 100000000000:
        return "%8dM" % (i // 1000000)
    if i < 100000000000000:
        return "%8dG" % (i // 1000000000)
    return "%8dT" % (i // 1000000000000)


def ip(a):
    """Sort key of an address: AF_INET (2) before AF_INET6 (10), then by value."""
    a = ipaddress.ip_address(a)
    return (2 if a.version == 4 else 10, int(a))


def v6(a):
    return ipaddress.ip_address(a).version == 6


def addrport(a, port):
    """ipvsadm's addrport_to_anyname with FMT_NUMERIC: "%s%s%s:%u", brackets for IPv6."""
    a = ipaddress.ip_address(a)
    return ("[%s]:%d" if a.version == 6 else "%s:%d") % (a.compressed, port)


def services(sort=True, only=None):
    v = [s for s in L["services"] if only is None or only(s)]
    if sort:
        v.sort(key=lambda s: (s.get("fwmark") or 0, ip(s["addr"])[0], PROTO[s["proto"]],
                              ip(s["addr"])[1], s["port"]))
    return v


def dests(s, sort=True):
    v = list(s["dests"])
    if sort:
        v.sort(key=lambda d: (ip(d["addr"]), d["port"]))
    return v


def svc_name(s):
    if s.get("fwmark"):
        return "FWM  %d" % s["fwmark"] + (" IPv6" if v6(s["addr"]) else "")
    name = "%-4s %s" % (s["proto"], addrport(s["addr"], s["port"]))
    return name if v6(s["addr"]) else name[:33]


def mask(s):
    """The mask ipvsadm prints, or None for the full one."""
    m = s["netmask"]
    if m is None or m in ("255.255.255.255", 128):
        return None
    return "%d" % m if isinstance(m, int) else m


def title(fmt):
    if fmt == "stats":
        return "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n" % (
            "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
    if fmt == "rate":
        return "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n" % (
            "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
    if fmt == "thresholds":
        return "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n" % (
            "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
    if fmt == "pc":
        return "%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n" % (
            "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn")
    if fmt == "tun":
        return ("Prot LocalAddress:Port Scheduler Flags\n"
                "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n")
    return ("Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")


def listing(fmt, exact=False, sort=True, only=None):
    out = ""
    if only is None:
        out += "IP Virtual Server version %d.%d.%d (size=%d)\n" % (1, 2, 1, L["conn_table_size"])
    out += title(fmt)
    for s in services(sort, only):
        svc = svc_name(s)
        if fmt in ("stats", "rate"):
            k = s["stats"] if fmt == "stats" else s["rate"]
            keys = (["conns", "inpkts", "outpkts", "inbytes", "outbytes"] if fmt == "stats"
                    else ["cps", "inpps", "outpps", "inbps", "outbps"])
            out += "%-33s" % svc + "".join(largenum(k[x], exact) for x in keys)
        else:
            out += "%s %s" % (svc, s["sched"])
            if s["flags"]:
                out += " (" + ",".join(s["flags"]) + ")"
            if s["persistent"] is not None:
                out += " persistent %d" % s["persistent"]
                if mask(s):
                    out += " mask %s" % mask(s)
            if s["ops"]:
                out += " ops"
        out += "\n"
        for d in dests(s, sort):
            dn = addrport(d["addr"], d["port"])
            dn = dn if v6(d["addr"]) else dn[:28]
            if fmt == "stats":
                st = d["stats"]
                out += "  -> %-28s" % dn + "".join(
                    largenum(st[x], exact) for x in ["conns", "inpkts", "outpkts", "inbytes", "outbytes"]) + "\n"
            elif fmt == "rate":
                r = d["rate"]
                out += "  -> %-28s %8d %8d %8d" % (dn, r["cps"], r["inpps"], r["outpps"])
                out += largenum(r["inbps"], exact) + largenum(r["outbps"], exact) + "\n"
            elif fmt == "thresholds":
                out += "  -> %-28s %-10d %-10d %-10d %-10d\n" % (
                    dn, d["u_threshold"], d["l_threshold"], d["active"], d["inactive"])
            elif fmt == "pc":
                out += "  -> %-28s %-9d %-11d %-10d %-10d\n" % (
                    dn, d["weight"], d["persist"], d["active"], d["inactive"])
            elif fmt == "tun":
                ti = "ipip" if d["forward"] == "Tunnel" else "n/a"
                out += "  -> %-28s %-7s %-13s %-6d %-10d %-10d\n" % (
                    dn, d["forward"], ti, d["weight"], d["active"], d["inactive"])
            else:
                out += "  -> %-28s %-7s %-6d %-10d %-10d\n" % (
                    dn, d["forward"], d["weight"], d["active"], d["inactive"])
    return out


def sock(text):
    """A JSON socket address ("a.b.c.d:p" or "[v6]:p") as ipvsadm prints it."""
    a, p = text.rsplit(":", 1)
    return addrport(a.strip("[]"), int(p))


def conns(pe):
    out = "IPVS connection entries\n"
    if pe:
        out += "pro expire %-11s %-18s %-18s %-18s %-16s %s\n" % (
            "state", "source", "virtual", "destination", "pe name", "pe_data")
    else:
        out += "pro expire %-11s %-18s %-18s %s\n" % ("state", "source", "virtual", "destination")
    for c in C:
        e = c["expire_secs"]
        exp = "%02d:%02d" % (e // 60, e % 60)
        out += "%-3s %-6s %-11s %-18s %-18s %s\n" % (c["proto"], exp, c["state"], sock(c["client"]),
                                                   sock(c["vip"]), sock(c["dest"]))
    return out


def save():
    out = ""
    for s in services():
        if s.get("fwmark"):
            svc = "-f %d" % s["fwmark"] + (" -6" if v6(s["addr"]) else "")
        else:
            svc = "%s %s" % (SWITCH[s["proto"]], addrport(s["addr"], s["port"]))
        out += "-A %s -s %s" % (svc, s["sched"])
        if s["persistent"] is not None:
            out += " -p %d" % s["persistent"]
            if mask(s):
                out += " -M %s" % mask(s)
        if s["ops"]:
            out += " -o"
        if s["flags"]:
            out += " -b " + ",".join(s["flags"])
        out += "\n"
        for d in dests(s):
            dn = addrport(d["addr"], d["port"])
            if d["forward"] == "Tunnel":
                out += "-a %s -r %s %s -w %d --tun-type %s\n" % (svc, dn, FWD_SWITCH[d["forward"]], d["weight"], "ipip")
            else:
                out += "-a %s -r %s %s -w %d\n" % (svc, dn, FWD_SWITCH[d["forward"]], d["weight"])
    return out


FILES = {
    "list_plain.txt": listing("plain"),
    "list_nosort.txt": listing("plain", sort=False),
    "list_stats.txt": listing("stats"),
    "list_stats_exact.txt": listing("stats", exact=True),
    "list_rate.txt": listing("rate"),
    "list_rate_exact.txt": listing("rate", exact=True),
    "list_thresholds.txt": listing("thresholds"),
    "list_persistent_conn.txt": listing("pc"),
    "list_tun_info.txt": listing("tun"),
    "list_service.txt": listing("plain", only=lambda s: (s["proto"], s["addr"], s["port"]) == ("TCP", "207.175.44.110", 80)),
    "list_service_stats.txt": listing("stats", only=lambda s: (s["proto"], s["addr"], s["port"]) == ("TCP", "207.175.44.110", 80)),
    "conns.txt": conns(False),
    "conns_persistent.txt": conns(True),
    "timeout.txt": "Timeout (tcp tcpfin udp): %d %d %d\n" % tuple(L["timeouts"]),
    "save.txt": save(),
}
for name, text in FILES.items():
    open(name, "w").write(text)

# Dual stack: IPv4 and IPv6 services, NAT64 FullNAT real servers, fwmark services of both
# families.
L = json.load(open("listing6.json"))
C = json.load(open("conns6.json"))
FILES6 = {
    "list6_plain.txt": listing("plain"),
    "list6_nosort.txt": listing("plain", sort=False),
    "list6_stats.txt": listing("stats"),
    "list6_stats_exact.txt": listing("stats", exact=True),
    "list6_rate.txt": listing("rate"),
    "list6_thresholds.txt": listing("thresholds"),
    "list6_persistent_conn.txt": listing("pc"),
    "list6_tun_info.txt": listing("tun"),
    "list6_service.txt": listing("plain", only=lambda s: (s["proto"], s["addr"], s["port"]) == ("TCP", "2001:db8:f::80", 80) and not s.get("fwmark")),
    "list6_fwmark6.txt": listing("plain", only=lambda s: s.get("fwmark") == 7 and v6(s["addr"])),
    "conns6.txt": conns(False),
    "conns6_persistent.txt": conns(True),
    "save6.txt": save(),
}
for name, text in FILES6.items():
    open(name, "w").write(text)
