#!/usr/bin/env python3
"""A PJSIP phone (pjproject's pjsua2 through PyPI `pjsua2-python`) for Confab's call tests.

Driven by crates/confab/tests/calls_pjsip.rs: it registers with Confab over UDP or TCP, then
either places a call (--dial) or answers the first one, plays a tone into the call from a
ToneGenerator port (no sound card: the null audio device), records what it receives to a WAV,
samples the RTP statistics of the call while it is up, and hangs up after --talk seconds (caller)
or waits for the peer's BYE (callee). Every step is printed on stdout as one JSON object per line;
the Rust test reads them. Bounded: it exits by itself after --lifetime seconds.
"""

import argparse
import json
import os
import sys
import time

import pjsua2 as pj


def emit(event, **fields):
    fields["event"] = event
    fields["t"] = round(time.monotonic() - START, 3)
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


START = time.monotonic()


class Phone:
    """Holds every pjsua2 object so none is collected while the library still uses it."""

    def __init__(self, args):
        self.args = args
        self.ep = pj.Endpoint()
        self.account = None
        self.call = None
        self.tone = None
        self.recorder = None
        self.confirmed_at = None
        self.disconnected = False
        self.last_stats = None
        self.hung_up = False


PHONE = None


class FileLog(pj.LogWriter):
    """pjsip's log, flushed line by line: the script leaves with os._exit, which would drop
    whatever a buffered log file still holds."""

    def __init__(self, path):
        pj.LogWriter.__init__(self)
        self.file = open(path, "w", buffering=1, encoding="utf-8", errors="replace")

    def write(self, entry):
        self.file.write(entry.msg if entry.msg.endswith("\n") else entry.msg + "\n")


class Call(pj.Call):
    def __init__(self, acc, call_id=pj.PJSUA_INVALID_ID):
        pj.Call.__init__(self, acc, call_id)

    def onCallState(self, prm):
        ci = self.getInfo()
        emit("state", state=ci.stateText, code=ci.lastStatusCode, reason=ci.lastReason)
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and PHONE.confirmed_at is None:
            PHONE.confirmed_at = time.monotonic()
            emit("confirmed")
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            PHONE.disconnected = True
            emit("disconnected", code=ci.lastStatusCode, reason=ci.lastReason)

    def onCallMediaState(self, prm):
        ci = self.getInfo()
        for mi in ci.media:
            if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            am = self.getAudioMedia(mi.index)
            PHONE.tone.startTransmit(am)
            am.startTransmit(PHONE.recorder)
            si = self.getStreamInfo(mi.index)
            emit("media", remote_rtp=si.remoteRtpAddress, codec=si.codecName)

    def onCallTsxState(self, prm):
        try:
            tsx = prm.e.body.tsxState.tsx
        except Exception:  # noqa: BLE001 - not every event carries a transaction
            return
        if tsx.method in ("BYE", "CANCEL", "INVITE") and tsx.statusCode >= 200:
            role = "uac" if tsx.role == pj.PJSIP_ROLE_UAC else "uas"
            emit("tsx", method=tsx.method, status=tsx.statusCode, role=role)


class Account(pj.Account):
    def onRegState(self, prm):
        info = self.getInfo()
        emit("reg", code=info.regStatus, active=info.regIsActive, text=info.regStatusText)
        if info.regIsActive and info.regStatus == 200:
            emit("registered")

    def onIncomingCall(self, prm):
        call = Call(self, prm.callId)
        PHONE.call = call
        emit("incoming", remote=call.getInfo().remoteUri)
        op = pj.CallOpParam()
        op.statusCode = 180
        call.answer(op)
        op = pj.CallOpParam()
        op.statusCode = 200
        call.answer(op)


def sample_stats():
    call = PHONE.call
    if call is None or PHONE.disconnected or PHONE.confirmed_at is None:
        return
    try:
        ci = call.getInfo()
        for mi in ci.media:
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                ss = call.getStreamStat(mi.index)
                si = call.getStreamInfo(mi.index)
                PHONE.last_stats = {
                    "rx_pkt": ss.rtcp.rxStat.pkt,
                    "tx_pkt": ss.rtcp.txStat.pkt,
                    "rx_bytes": ss.rtcp.rxStat.bytes,
                    "remote_rtp": si.remoteRtpAddress,
                }
    except pj.Error:
        pass


def main():
    global PHONE
    ap = argparse.ArgumentParser()
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--domain", required=True)
    ap.add_argument("--server", required=True, help="Confab's host:port")
    ap.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    ap.add_argument("--bind", default="127.0.0.1", help="this phone's own address")
    ap.add_argument("--sip-port", type=int, required=True)
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--dial", help="URI to call; without it, answer the first incoming call")
    ap.add_argument("--tone", type=float, required=True, help="tone frequency, Hz")
    ap.add_argument("--record", required=True, help="WAV file for the received audio")
    ap.add_argument("--talk", type=float, default=4.0, help="seconds before the caller hangs up")
    ap.add_argument("--lifetime", type=float, default=60.0)
    ap.add_argument("--log", required=True)
    ap.add_argument(
        "--no-register",
        action="store_true",
        help="no registrar, no proxy: a direct call (the harness's own check)",
    )
    args = ap.parse_args()
    PHONE = Phone(args)
    ep = PHONE.ep
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "pjsua2-confab-test"
    cfg.logConfig.level = 5
    # With a writer, consoleLevel is what reaches it (nothing goes to the console).
    cfg.logConfig.consoleLevel = 5
    log_writer = FileLog(args.log)
    cfg.logConfig.writer = log_writer
    cfg.logConfig.decor = cfg.logConfig.decor & ~pj.PJ_LOG_HAS_NEWLINE
    cfg.medConfig.noVad = True
    cfg.medConfig.clockRate = 8000
    cfg.medConfig.sndClockRate = 8000
    ep.libInit(cfg)

    tcfg = pj.TransportConfig()
    tcfg.port = args.sip_port
    tcfg.boundAddress = args.bind
    tcfg.publicAddress = args.bind
    kind = pj.PJSIP_TRANSPORT_TCP if args.transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
    ep.transportCreate(kind, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()
    # G.711 only, so that both phones and the relay agree without transcoding questions.
    for codec in ep.codecEnum2():
        keep = codec.codecId.startswith("PCMU/") or codec.codecId.startswith("PCMA/")
        ep.codecSetPriority(codec.codecId, 200 if codec.codecId.startswith("PCMU/") else (100 if keep else 0))

    PHONE.tone = pj.ToneGenerator()
    PHONE.tone.createToneGenerator(8000, 1)
    tones = pj.ToneDescVector()
    td = pj.ToneDesc()
    td.freq1 = int(args.tone)
    td.freq2 = 0
    td.on_msec = 1000
    td.off_msec = 0
    td.volume = 0
    tones.append(td)
    PHONE.tone.play(tones, True)
    PHONE.recorder = pj.AudioMediaRecorder()
    PHONE.recorder.createRecorder(args.record)

    server = f"sip:{args.server};transport={args.transport}"
    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{args.user}@{args.domain}"
    if not args.no_register:
        acfg.regConfig.registrarUri = server
        acfg.regConfig.timeoutSec = 600
        acfg.sipConfig.proxies.append(server + ";lr")
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", args.user, 0, args.password))
    acfg.mediaConfig.transportConfig.boundAddress = args.bind
    acfg.mediaConfig.transportConfig.publicAddress = args.bind
    acfg.mediaConfig.transportConfig.port = args.rtp_port
    acfg.mediaConfig.transportConfig.portRange = 1
    PHONE.account = Account()
    PHONE.account.create(acfg)

    deadline = START + args.lifetime
    dialed = False
    registered_seen = args.no_register
    if args.no_register:
        emit("registered")
    last_sample = 0.0
    ok = False
    while time.monotonic() < deadline:
        ep.libHandleEvents(20)
        now = time.monotonic()
        if not registered_seen:
            try:
                info = PHONE.account.getInfo()
                registered_seen = info.regIsActive and info.regStatus == 200
            except pj.Error:
                pass
        if args.dial and registered_seen and not dialed:
            dialed = True
            call = Call(PHONE.account)
            PHONE.call = call
            emit("dialing", uri=args.dial)
            call.makeCall(args.dial, pj.CallOpParam(True))
        if now - last_sample > 0.25:
            last_sample = now
            sample_stats()
        if (
            args.dial
            and PHONE.confirmed_at is not None
            and not PHONE.hung_up
            and now - PHONE.confirmed_at >= args.talk
        ):
            sample_stats()
            emit("stats", **(PHONE.last_stats or {}))
            PHONE.hung_up = True
            emit("hangup")
            PHONE.call.hangup(pj.CallOpParam())
        if PHONE.disconnected:
            if not args.dial:
                emit("stats", **(PHONE.last_stats or {}))
            # Let the last transaction events (the BYE's 200) be reported.
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                ep.libHandleEvents(20)
            ok = True
            break
    if not ok:
        emit("timeout", after=args.lifetime)
    # Close the WAV properly (its header carries the length), then leave without tearing the
    # library down: libDestroy waits on network transactions we do not care about any more.
    PHONE.recorder = None
    emit("done", ok=ok)
    sys.stdout.flush()
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    main()
