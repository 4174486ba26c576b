/*
 * keylock lock protocol: a Promela model of the server lock table, the client lock manager, the
 * network between them, a server crash with lock recovery, a client crash with fence and reclaim, and
 * farewell, as keylock implements them (DESIGN §3–§4, src/core/lock-server.ts, client-locks.ts,
 * recovery.ts). docs/model.md says what is modelled, what is abstracted and how to run it.
 *
 * Properties (assert, checked after every step by check_all(), at every grant, and at quiescence by
 * the `final` process):
 *   P1 compat     no two clients rely on incompatible modes of one key; a client relies on its cached
 *                 mode and, while its invalidation callback runs, on the mode it started from (a closing
 *                 client, shut down with every handle released, relies on nothing)
 *   P2 handles    every handle is served by its client's cached mode; handles on one key share
 *                 (read/read, write_only/write_only) within a client
 *   P3 no-grant   no grant while an invalidation of that key is unanswered at its client, and no grant
 *                 or invalidation while any client's lock recovery is pending
 *   P4 write-seq  write/write_only grants carry strictly increasing tokens, across the server crash
 *   P5 coherence  a read under a handle finds its cache (when it has one) equal to the resource version
 *   P6 departed   a client that said farewell or was reclaimed has no entry in the lock table
 *   P7 protocol   one request per client per key; grants answer the outstanding request; invalidation
 *                 answers answer an outstanding invalidation
 *   P8 quiescence when nothing can move (spin `timeout`): every live client finished its work, the
 *                 farewell completed, recovery is over, nothing is queued or invalidated, no message is
 *                 in flight. With `pan -l` and no progress labels the graph has no cycle at all, so
 *                 every execution reaches such a state: every request is eventually answered.
 *
 * Mutations (exactly one MUT_* defined makes a wrong variant; each must produce an error trail):
 *   MUT_GRANT_WHILE_INV   the server answers its own invalidations at once and ignores the real answers
 *   MUT_NULL_COMPAT       a client's own grant is compatible with its own null (shrink) request
 *   MUT_REUSE_SEQ         a write grant carries the previous write grant's token
 *   MUT_REISSUE_SEQ       the restarted server starts its tokens at 0 (B4)
 *   MUT_EARLY_INV_RESP    a client answers an invalidation on arrival (and swallows its later answer)
 *   MUT_RECOVER_LOWERED   recovery reports the mode an invalidation in progress lowered to (B7)
 *   MUT_FAREWELL_SKIPS    a farewell is answered without waiting for the client's lock recovery (B5)
 *   MUT_RESUME_EARLY      the lock table resumes when the first client finished recovery
 *   MUT_SHARED_WRITE      a second local write handle is served while one is held
 *   MUT_NO_RESEND         a reconnecting client does not resend its outstanding requests
 */

#ifndef NC
#define NC 3            /* clients */
#endif
#ifndef NK
#define NK 2            /* keys */
#endif
#ifndef NT0
#define NT0 2           /* application tasks on client 0 (others have 1): local handle rules */
#endif
#ifndef OPS
#define OPS 1           /* acquire/use/release cycles per task */
#endif
#ifndef USES
#define USES 1          /* reads/writes per handle */
#endif
#ifndef SCRASH
#define SCRASH 1        /* server crashes */
#endif
#ifndef CCRASH
#define CCRASH 1        /* client crashes (client CRASHC; fence kills, then reclaim) */
#endif
#ifndef CRASHC
#define CRASHC 2
#endif
#ifndef FWC
#define FWC 1           /* the client that says farewell after its work */
#endif
#ifndef NONBLOCK
#define NONBLOCK 1      /* client 0's second task may acquire nonblock (trylock) */
#endif
#ifndef SHRINK
#define SHRINK 1        /* idle locks may be released through null requests */
#endif

#define NT 2            /* task slots per client */
#define NKC (NK*NC)

/* modes */
#define NUL 0
#define RD 1
#define WR 2
#define WO 3
#define NONE 4
#define NOCACHE 255

/* modes.ts, as tables */
#define COMPAT_X(g,r) ((g)==NUL || (r)==NUL || ((g)==(r) && ((g)==RD || (g)==WO)))
#define COMPAT_S(g,r) (((g)==(r) && ((g)==RD || (g)==WO)) || ((g)==RD && (r)==WR))
#define INVMODE(g,r) (((g)==WR && (r)==RD) -> RD : NUL)
#define SATISFIES(g,w) ((w)==NUL || (g)==(w) || ((g)==WR && (w)==RD))
#ifdef MUT_SHARED_WRITE
#define SHARE(h,w) ((h)==NUL || (w)==NUL || ((h)==(w)))
#else
#define SHARE(h,w) ((h)==NUL || (w)==NUL || ((h)==(w) && ((h)==RD || (h)==WO)))
#endif
#ifdef MUT_NULL_COMPAT
#define OWN_NULL_COMPAT(i,r,m) ((i) == (r) && (m) == NUL)
#else
#define OWN_NULL_COMPAT(i,r,m) 0
#endif
/* the property's own copy of handlesShare (never mutated) */
#define SHARE_SPEC(h,w) ((h)==NUL || (w)==NUL || ((h)==(w) && ((h)==RD || (h)==WO)))
#define CANREAD(m) ((m)==RD || (m)==WR)
#define CANWRITE(m) ((m)==WR || (m)==WO)
/* client-locks.ts LOWERED: the greatest mode both the held mode and the target satisfy */
#define LOWERED(f,t) (((f)==(t)) -> (f) : ((((f)==WR && (t)==RD) || ((f)==RD && (t)==WR)) -> RD : NUL))

#define KC(k,c) ((k)*NC+(c))
#define UI(k,c,m) (KC(k,c)*3+(m)-1)
#define TI(c,t) ((c)*NT+(t))

mtype = { REQ, INVRESP, REP, REPEND, FW, GRANT, INV, REFUSE, FWRESP };

#define UPQ (3*NK+2)
#define DNQ (2*NK+1)
chan up[NC] = [UPQ] of { mtype, byte, byte, byte };   /* client -> server: kind, key, mode, extra */
chan dn[NC] = [DNQ] of { mtype, byte, byte, byte };   /* server -> client */

#define SENDUP(c,a,b,d,e) assert(len(up[c]) < UPQ); up[c]!a,b,d,e
#define SENDDN(c,a,b,d,e) assert(len(dn[c]) < DNQ); dn[c]!a,b,d,e

/* ---------------------------------------------------------------- server (lock-server.ts, recovery.ts) */
byte gm[NKC];           /* granted (or invalidated) entry mode per key and client, NONE when absent */
bit  ginv[NKC];         /* the entry is on the invalidated list */
byte rqm[NKC];          /* requested mode per key and client, NONE when absent */
byte rqq[NKC];          /* requested FIFO per key: client ids */
byte rqn[NK];
byte wseq;              /* last write seq handed out or observed */
byte hw;                /* durable high-water mark (persisted before a token is handed out) */
bit  recovering;        /* the recovery hold */
bit  pendL[NC];         /* lock recovery pending for the client */
bit  fwwait[NC];        /* a farewell waits for the client's lock recovery */
bit  fwhalf[NC];        /* farewell: entries gone, record delete and answer still to come */
bit  gone[NC];          /* farewell done or reclaimed: the server forgot the client */
byte srvinc = 1;        /* server incarnation (term) */
byte scrashes;
#ifdef MUT_GRANT_WHILE_INV
bit  swallow[NKC];
#endif
#ifdef MUT_REUSE_SEQ
byte lastgiven;
#endif

/* ghosts (never reset by the crash) */
bit  outinv[NKC];       /* an invalidation the server sent is not yet answered back to it */
byte lastseq;           /* last write token handed out, any key (per key follows) */
byte lastseqk[NK];

/* ---------------------------------------------------------------- clients (client-locks.ts) */
byte ep[NC];            /* the server incarnation the client greeted */
bit  obj[NKC];          /* a lock object exists */
byte cm[NKC];           /* cached mode */
byte invm[NKC];         /* mode before the invalidation in progress, NONE when none */
byte req[NKC];          /* outstanding request mode, NONE when none */
bit  reqnq[NKC];        /* ... and it is a no-queue one */
byte reqw[NKC];         /* the nonblock task it was sent for, NONE when none */
byte seqc[NKC];
byte users[NKC*3];
byte iqt[NKC*2];        /* invalidation queue: targets */
byte iqo[NKC*2];        /* ... old modes (echoed) */
byte iqe[NKC*2];        /* ... server incarnation it came from */
bit  iqearly[NKC*2];    /* MUT_EARLY_INV_RESP: already answered */
byte iqn[NKC];
bit  iqprog[NKC];       /* the head's application callback runs */
byte iqto[NKC];         /* ... and lowers to this */
byte wq[NKC*2];         /* waiting tasks, FIFO */
byte wqn[NKC];
byte cache[NKC];        /* application cache: resource version, NOCACHE when none */
byte ver[NK];           /* the shared resource's version per key */
bit  dead[NC];
byte ccrashes;
bit  leaving[NC];
bit  left[NC];
/* application tasks */
byte tk[NC*NT];
byte tm[NC*NT];
byte ts[NC*NT];         /* 0 idle, 1 waiting, 2 holding */
byte tops[NC*NT];
byte tuse[NC*NT];
bit  tnb[NC*NT];
bit  tasked[NC*NT];     /* nonblock: its no-queue request was answered */
#define T_IDLE 0
#define T_WAIT 1
#define T_HOLD 2

/* ---------------------------------------------------------------- properties */
inline check_all() {
  d_step {
  ci = 0;
  do
  :: ci < NKC ->
     cc = ci % NC; ck = ci / NC;
     if
     :: !dead[cc] && !left[cc] ->
        cj = 1;
        do
        :: cj <= 3 ->
           assert(users[ci*3+cj-1] == 0 || SATISFIES(cm[ci], cj));          /* P2 */
           cl = 1;
           do
           :: cl <= 3 ->
              assert(users[ci*3+cj-1] == 0 || users[ci*3+cl-1] == 0 ||
                     (cj == cl && users[ci*3+cj-1] < 2) || SHARE_SPEC(cj, cl)); /* P2 */
              cl++
           :: else -> break
           od;
           cj++
        :: else -> break
        od;
        cd = cc + 1;
        do
        :: cd < NC ->
           if
           :: !dead[cd] && !leaving[cd] && !leaving[cc] ->
              assert(COMPAT_X(cm[ci], cm[KC(ck,cd)]));                         /* P1 */
              assert(!iqprog[ci] || COMPAT_X(invm[ci], cm[KC(ck,cd)]));
              assert(!iqprog[KC(ck,cd)] || COMPAT_X(cm[ci], invm[KC(ck,cd)]));
              assert(!iqprog[ci] || !iqprog[KC(ck,cd)] || COMPAT_X(invm[ci], invm[KC(ck,cd)]))
           :: else -> skip
           fi;
           cd++
        :: else -> break
        od
     :: else -> skip
     fi;
     assert(!gone[cc] || (gm[ci] == NONE && rqm[ci] == NONE));                 /* P6 */
     ci++
  :: else -> break
  od
  }
}

#define PENDING_ANY (pendL[0] || pendL[1] || pendL[2])

/* ---------------------------------------------------------------- server transitions */

/* grantHead: the head request replaces the requester's entry; null grants are forgotten */
inline grant_head(k) {
  r = rqq[KC(k,0)]; m = rqm[KC(k,r)];
  assert(!PENDING_ANY);                                                          /* P3 */
  i = 0;
  do :: i < NC -> assert(!outinv[KC(k,i)]); i++ :: else -> break od;             /* P3 */
  i = 0;
  do :: i + 1 < rqn[k] -> rqq[KC(k,i)] = rqq[KC(k,i+1)]; i++ :: else -> break od;
  rqn[k]--; rqm[KC(k,r)] = NONE; gm[KC(k,r)] = NONE;
  if
  :: CANWRITE(m) ->
     wseq++; s = wseq;
#ifdef MUT_REUSE_SEQ
     if :: lastgiven > 0 -> s = lastgiven :: else -> skip fi;
     lastgiven = wseq;
#endif
     if :: wseq > hw -> hw = wseq :: else -> skip fi;                            /* persist before promise */
     assert(s > lastseq && s > lastseqk[k]);                                     /* P4 */
     lastseq = s; lastseqk[k] = s
  :: else -> s = 0
  fi;
  SENDDN(r, GRANT, k, m, s);
  if :: m != NUL -> gm[KC(k,r)] = m :: else -> skip fi
}

/* makeProgress: stop while held or invalidating; the head invalidates every conflict at once, or is granted */
inline process(k) {
  if
  :: recovering -> skip
  :: else ->
     do
     :: rqn[k] == 0 -> break
     :: else ->
        anyinv = 0;
        i = 0;
        do :: i < NC -> anyinv = anyinv || ginv[KC(k,i)]; i++ :: else -> break od;
        if
        :: anyinv -> break
        :: else ->
           r = rqq[KC(k,0)]; m = rqm[KC(k,r)];
           i = 0;
           do
           :: i < NC ->
              g = gm[KC(k,i)];
              if
              :: g != NONE && !ginv[KC(k,i)] &&
                 !((i == r) -> COMPAT_S(g, m) : COMPAT_X(g, m)) && !OWN_NULL_COMPAT(i, r, m) ->
                 assert(!PENDING_ANY);                                           /* P3 */
                 SENDDN(i, INV, k, INVMODE(g, m), g);
                 ginv[KC(k,i)] = 1; outinv[KC(k,i)] = 1; anyinv = 1;
#ifdef MUT_GRANT_WHILE_INV
                 swallow[KC(k,i)] = 1; ginv[KC(k,i)] = 0;
                 if :: INVMODE(g, m) == NUL -> gm[KC(k,i)] = NONE :: else -> gm[KC(k,i)] = RD fi;
                 anyinv = 0;
#endif
                 skip
              :: else -> skip
              fi;
              i++
           :: else -> break
           od;
           if
           :: anyinv -> break
           :: else -> grant_head(k)
           fi
        fi
     od
  fi
}

/* onClientGone: every entry of client x goes; progress on every key */
inline client_gone(x) {
  k = 0;
  do
  :: k < NK ->
     gm[KC(k,x)] = NONE; ginv[KC(k,x)] = 0; outinv[KC(k,x)] = 0;
     if
     :: rqm[KC(k,x)] != NONE ->
        rqm[KC(k,x)] = NONE;
        i = 0; j = 0;
        do
        :: i < rqn[k] ->
           if :: rqq[KC(k,i)] != x -> rqq[KC(k,j)] = rqq[KC(k,i)]; j++ :: else -> skip fi;
           i++
        :: else -> break
        od;
        rqn[k] = j
     :: else -> skip
     fi;
     k++
  :: else -> break
  od;
  k = 0;
  do :: k < NK -> process(k); k++ :: else -> break od
}

/* the end of a client's lock recovery (empty batch, reclaim, farewell): may end the hold */
inline finish_recovery(x) {
  pendL[x] = 0;
  if
  :: recovering && !PENDING_ANY ->
     recovering = 0;
     k = 0;
     do :: k < NK -> process(k); k++ :: else -> break od
  :: else -> skip
  fi
}

inline farewell_begin(x) {
  fwwait[x] = 0;
  client_gone(x);
  gone[x] = 1;
  fwhalf[x] = 1
}

inline handle_up(x) {
  if
  :: gone[x] && (typ == REQ || typ == INVRESP) -> skip   /* a forgotten client's lock traffic is ignored */
  :: else ->
  if
  :: typ == REQ ->
     assert(rqm[KC(mk,x)] == NONE);                                              /* P7 */
     if
     :: mx == 1 ->                                         /* no-queue: admitted or refused at once */
        ok = !recovering && rqn[mk] == 0;
        i = 0;
        do
        :: i < NC ->
           ok = ok && !ginv[KC(mk,i)] &&
                (i == x || gm[KC(mk,i)] == NONE || COMPAT_X(gm[KC(mk,i)], mm));
           i++
        :: else -> break
        od;
        if
        :: !ok -> SENDDN(x, REFUSE, mk, mm, 0)
        :: else ->
           if :: gm[KC(mk,x)] == NUL -> gm[KC(mk,x)] = NONE :: else -> skip fi;
           rqm[KC(mk,x)] = mm; rqq[KC(mk,rqn[mk])] = x; rqn[mk]++;
           process(mk)
        fi
     :: else ->
        rqm[KC(mk,x)] = mm; rqq[KC(mk,rqn[mk])] = x; rqn[mk]++;
        process(mk)
     fi
  :: typ == INVRESP ->
#ifdef MUT_GRANT_WHILE_INV
     if
     :: swallow[KC(mk,x)] -> swallow[KC(mk,x)] = 0; outinv[KC(mk,x)] = 0
     :: else ->
#endif
     assert(ginv[KC(mk,x)] && (mm == NUL || (mm == RD && gm[KC(mk,x)] == WR)));   /* P7 */
     ginv[KC(mk,x)] = 0; outinv[KC(mk,x)] = 0;
     if :: mm == NUL -> gm[KC(mk,x)] = NONE :: else -> gm[KC(mk,x)] = RD fi;
     process(mk)
#ifdef MUT_GRANT_WHILE_INV
     fi
#endif
  :: typ == REP ->
     if
     :: pendL[x] ->
        assert(gm[KC(mk,x)] == NONE);
        gm[KC(mk,x)] = mm;
        if :: mx > wseq -> wseq = mx :: else -> skip fi;
        if :: wseq > hw -> hw = wseq :: else -> skip fi
     :: else -> skip                                       /* nobody asked (a farewell retry) */
     fi
  :: typ == REPEND ->
     if
     :: pendL[x] ->
#ifdef MUT_RESUME_EARLY
        if :: recovering -> recovering = 0; k = 0; do :: k < NK -> process(k); k++ :: else -> break od
           :: else -> skip fi;
#endif
        finish_recovery(x);
        if :: fwwait[x] -> farewell_begin(x) :: else -> skip fi
     :: else -> skip
     fi
  :: typ == FW ->
     if
     :: gone[x] && !fwhalf[x] -> SENDDN(x, FWRESP, 0, 0, 0)     /* already forgotten: answer at once */
     :: gone[x] && fwhalf[x] -> skip                            /* being answered */
#ifndef MUT_FAREWELL_SKIPS
     :: !gone[x] && pendL[x] -> fwwait[x] = 1                   /* B5: after its lock recovery */
     :: !gone[x] && !pendL[x] -> farewell_begin(x)
#else
     :: !gone[x] -> farewell_begin(x)
#endif
     fi
  fi
  fi
}

#define RECV(x) \
  :: atomic { nempty(up[x]) -> up[x]?typ,mk,mm,mx; handle_up(x); check_all() }

active proctype server() {
  mtype typ;
  byte mk, mm, mx, k, r, m, g, s, i, j, x;
  bit anyinv, ok;
  byte ci, cc, ck, cj, cl, cd;
end:
  do
  RECV(0)
  RECV(1)
  RECV(2)
  :: atomic {                                              /* farewell: record deleted, then the answer */
       (fwhalf[0] || fwhalf[1] || fwhalf[2]) ->
       x = (fwhalf[0] -> 0 : (fwhalf[1] -> 1 : 2));
       fwhalf[x] = 0;
       if :: pendL[x] -> finish_recovery(x) :: else -> skip fi;
       SENDDN(x, FWRESP, 0, 0, 0);
       check_all()
     }
  :: atomic {                                              /* a dead client is fenced, then reclaimed */
       dead[CRASHC] && !gone[CRASHC] ->
       x = CRASHC;
       client_gone(x); gone[x] = 1;
       if :: pendL[x] -> finish_recovery(x) :: else -> skip fi;
       check_all()
     }
  :: atomic {                                              /* crash; a new server starts recovery */
       scrashes < SCRASH ->
       scrashes++; srvinc++;
       i = 0;
       do
       :: i < NKC -> gm[i] = NONE; ginv[i] = 0; rqm[i] = NONE; outinv[i] = 0;
#ifdef MUT_GRANT_WHILE_INV
          swallow[i] = 0;
#endif
          i++
       :: else -> break
       od;
       k = 0; do :: k < NK -> rqn[k] = 0; k++ :: else -> break od;
       i = 0;
       do
       :: i < NC ->
          do :: len(up[i]) > 0 -> up[i]?_,_,_,_ :: len(up[i]) == 0 -> break od;
          do :: len(dn[i]) > 0 -> dn[i]?_,_,_,_ :: len(dn[i]) == 0 -> break od;
          fwwait[i] = 0; fwhalf[i] = 0;
          pendL[i] = !gone[i];
          i++
       :: else -> break
       od;
       recovering = PENDING_ANY;
#ifdef MUT_REISSUE_SEQ
       wseq = 0;
#else
       wseq = hw;
#endif
       check_all()
     }
  od
}

/* ---------------------------------------------------------------- client transitions */

#define SERVABLE(c,k,m) (SATISFIES(cm[KC(k,c)], m) && usershare && invserve)

/* computes usershare and invserve for mode m on (c,k) */
inline local_facts(c, k, m) {
  usershare = 1; invserve = 1;
  j = 1;
  do
  :: j <= 3 -> usershare = usershare && (users[UI(k,c,j)] == 0 || SHARE(j, m)); j++
  :: else -> break
  od;
  j = 0;
  do
  :: j < iqn[KC(k,c)] -> invserve = invserve && SATISFIES(iqt[KC(k,c)*2+j], m); j++
  :: else -> break
  od
}

inline send_request(c, k, m, nq, w) {
  assert(req[KC(k,c)] == NONE);                                                  /* P7 */
  req[KC(k,c)] = m; reqnq[KC(k,c)] = nq; reqw[KC(k,c)] = w;
  if :: ep[c] == srvinc -> SENDUP(c, REQ, k, m, nq) :: else -> skip fi          /* else kept, resent */
}

inline answer_head(c, k) {
  x = KC(k,c)*2;
  if
  :: iqearly[x] -> skip                                    /* mutation: already answered */
  :: !iqearly[x] && iqe[x] == srvinc && ep[c] == srvinc -> SENDUP(c, INVRESP, k, iqt[x], iqo[x])
  :: else -> skip                                          /* owed to a dead server: dropped */
  fi;
  iqt[x] = iqt[x+1]; iqo[x] = iqo[x+1]; iqe[x] = iqe[x+1]; iqearly[x] = iqearly[x+1];
  iqearly[x+1] = 0;
  iqn[KC(k,c)]--; invm[KC(k,c)] = NONE; iqprog[KC(k,c)] = 0
}

inline fail_task(c, k, t) {
  /* remove t from the waiter FIFO */
  j = 0; y = 0;
  do
  :: j < wqn[KC(k,c)] ->
     if :: wq[KC(k,c)*2+j] != t -> wq[KC(k,c)*2+y] = wq[KC(k,c)*2+j]; y++ :: else -> skip fi;
     j++
  :: else -> break
  od;
  wqn[KC(k,c)] = y;
  if :: reqw[KC(k,c)] == t -> reqw[KC(k,c)] = NONE :: else -> skip fi;
  ts[TI(c,t)] = T_IDLE; tops[TI(c,t)]--
}

inline serve(c, k, t) {
  users[UI(k,c,tm[TI(c,t)])]++;
  ts[TI(c,t)] = T_HOLD; tuse[TI(c,t)] = 0
}

/* client-locks.ts makeProgress: invalidations first, then the head waiter (HEAD_RULES), then settle */
inline make_progress(c, k) {
  /* proceedWithInvalidations */
  do
  :: iqn[KC(k,c)] == 0 || iqprog[KC(k,c)] -> break
  :: else ->
     tgt = iqt[KC(k,c)*2];
     ok = 1;
     j = 1;
     do :: j <= 3 -> ok = ok && (users[UI(k,c,j)] == 0 || SATISFIES(tgt, j)); j++ :: else -> break od;
     if
     :: !ok -> break
     :: else ->
        from = cm[KC(k,c)]; to = LOWERED(from, tgt);
        invm[KC(k,c)] = from; cm[KC(k,c)] = to;
        if
        :: leaving[c] || from == to -> answer_head(c, k)
        :: else -> iqprog[KC(k,c)] = 1; iqto[KC(k,c)] = to; break
        fi
     fi
  od;
  /* the head waiter */
  do
  :: wqn[KC(k,c)] == 0 -> break
  :: else ->
     t = wq[KC(k,c)*2]; m = tm[TI(c,t)];
     local_facts(c, k, m);
     if
     :: SERVABLE(c, k, m) ->
        wq[KC(k,c)*2] = wq[KC(k,c)*2+1]; wqn[KC(k,c)]--;
        serve(c, k, t)
     :: else ->
        if
        :: tnb[TI(c,t)] ->
           if
           :: req[KC(k,c)] != NONE && reqw[KC(k,c)] == t -> break        /* its own no-queue request */
           :: else ->
              if
              :: !tasked[TI(c,t)] && req[KC(k,c)] == NONE && usershare && iqn[KC(k,c)] == 0 &&
                 !SATISFIES(cm[KC(k,c)], m) ->
                 tasked[TI(c,t)] = 1; send_request(c, k, m, 1, t)
              :: else -> fail_task(c, k, t)                              /* EAGAIN */
              fi
           fi
        :: else ->
           if
           :: req[KC(k,c)] != NONE -> break
           :: else ->
              if
              :: SATISFIES(cm[KC(k,c)], m) -> break                      /* local obstacles only */
              :: else -> send_request(c, k, m, 0, NONE)
              fi
           fi
        fi
     fi
  od;
  /* settle: an idle null lock is freed */
  if
  :: wqn[KC(k,c)] == 0 && req[KC(k,c)] == NONE && iqn[KC(k,c)] == 0 && cm[KC(k,c)] == NUL &&
     users[UI(k,c,RD)] == 0 && users[UI(k,c,WR)] == 0 && users[UI(k,c,WO)] == 0 ->
     obj[KC(k,c)] = 0; seqc[KC(k,c)] = 0
  :: else -> skip
  fi
}

inline acquire(c, t) {
  tk[TI(c,t)] = k; tm[TI(c,t)] = m; tnb[TI(c,t)] = nb; tasked[TI(c,t)] = 0;
  if :: !obj[KC(k,c)] -> obj[KC(k,c)] = 1; cm[KC(k,c)] = NUL :: else -> skip fi;
  local_facts(c, k, m);
  if
  :: wqn[KC(k,c)] == 0 && SERVABLE(c, k, m) -> serve(c, k, t)
  :: else ->
     if
     :: nb && wqn[KC(k,c)] > 0 -> ts[TI(c,t)] = T_IDLE; tops[TI(c,t)]--
     :: else -> ts[TI(c,t)] = T_WAIT; wq[KC(k,c)*2+wqn[KC(k,c)]] = t; wqn[KC(k,c)]++
     fi
  fi;
  make_progress(c, k)
}

#define LIVE(c) (!dead[c] && !left[c])

/* one task's steps: start an acquire (key, mode, nonblock chosen), use the handle, release it */
#define TASK(t) \
  :: atomic { LIVE(c) && t < ntask && ts[TI(c,t)] == T_IDLE && tops[TI(c,t)] > 0 && !leaving[c] -> \
       if :: k = 0 :: NK > 1 -> k = 1 fi; \
       if :: m = RD :: m = WR :: m = WO fi; \
       if :: nb = 0 :: NONBLOCK && c == 0 && t == 1 -> nb = 1 fi; \
       acquire(c, t); check_all() } \
  :: atomic { LIVE(c) && t < ntask && ts[TI(c,t)] == T_HOLD && tuse[TI(c,t)] < USES -> \
       k = tk[TI(c,t)]; m = tm[TI(c,t)]; \
       if \
       :: CANREAD(m) -> \
          assert(cache[KC(k,c)] == NOCACHE || cache[KC(k,c)] == ver[k]);   /* P5 */ \
          cache[KC(k,c)] = ver[k] \
       :: else -> skip \
       fi; \
       if \
       :: CANWRITE(m) -> ver[k]++; if :: m == WR -> cache[KC(k,c)] = ver[k] :: else -> skip fi \
       :: else -> skip \
       fi; \
       tuse[TI(c,t)]++; check_all() } \
  :: atomic { LIVE(c) && t < ntask && ts[TI(c,t)] == T_HOLD && tuse[TI(c,t)] > 0 -> \
       k = tk[TI(c,t)]; users[UI(k,c,tm[TI(c,t)])]--; ts[TI(c,t)] = T_IDLE; tops[TI(c,t)]--; \
       make_progress(c, k); check_all() }

#define SHRINK_KEY(kk) \
  :: atomic { SHRINK && LIVE(c) && !leaving[c] && ep[c] == srvinc && obj[KC(kk,c)] && cm[KC(kk,c)] != NUL && \
       req[KC(kk,c)] == NONE && wqn[KC(kk,c)] == 0 && iqn[KC(kk,c)] == 0 && \
       users[UI(kk,c,RD)] == 0 && users[UI(kk,c,WR)] == 0 && users[UI(kk,c,WO)] == 0 -> \
       k = kk; send_request(c, k, NUL, 0, NONE); check_all() }

#define CALLBACK_DONE(kk) \
  :: atomic { LIVE(c) && iqprog[KC(kk,c)] -> \
       k = kk; \
       if :: iqto[KC(k,c)] == NUL -> cache[KC(k,c)] = NOCACHE :: else -> skip fi; \
       answer_head(c, k); make_progress(c, k); check_all() }

proctype client(byte c; byte ntask) {
  mtype typ;
  byte mk, mm, mx, k, m, t, j, x, y, tgt, from, to, i;
  bit nb, ok, usershare, invserve;
  byte ci, cc, ck, cj, cl, cd;
end:
  do
  TASK(0)
  TASK(1)
  SHRINK_KEY(0)
  SHRINK_KEY(1)
  CALLBACK_DONE(0)
  CALLBACK_DONE(1)
  :: atomic {                                              /* a message from the server */
       LIVE(c) && nempty(dn[c]) -> dn[c]?typ,mk,mm,mx;
       if
       :: typ == GRANT ->
          assert(req[KC(mk,c)] == mm);                                           /* P7 */
          t = reqw[KC(mk,c)];
          req[KC(mk,c)] = NONE; reqnq[KC(mk,c)] = 0; reqw[KC(mk,c)] = NONE;
          cm[KC(mk,c)] = mm; seqc[KC(mk,c)] = mx;
          make_progress(c, mk)
       :: typ == REFUSE ->
          assert(req[KC(mk,c)] != NONE && reqnq[KC(mk,c)]);                       /* P7 */
          t = reqw[KC(mk,c)];
          req[KC(mk,c)] = NONE; reqnq[KC(mk,c)] = 0; reqw[KC(mk,c)] = NONE;
          if :: t != NONE && ts[TI(c,t)] == T_WAIT -> k = mk; fail_task(c, k, t) :: else -> skip fi;
          make_progress(c, mk)
       :: typ == INV ->
          if
          :: !obj[KC(mk,c)] -> SENDUP(c, INVRESP, mk, mm, mx)   /* B12: nothing held */
          :: else ->
             x = KC(mk,c)*2 + iqn[KC(mk,c)];
             assert(iqn[KC(mk,c)] < 2);
             iqt[x] = mm; iqo[x] = mx; iqe[x] = srvinc; iqearly[x] = 0;
#ifdef MUT_EARLY_INV_RESP
             SENDUP(c, INVRESP, mk, mm, mx); iqearly[x] = 1;
#endif
             iqn[KC(mk,c)]++;
             make_progress(c, mk)
          fi
       :: typ == FWRESP ->
          left[c] = 1                                      /* the server forgot us: reset */
       fi;
       check_all()
     }
  :: atomic {                                              /* greeting reaches a new server */
       LIVE(c) && ep[c] != srvinc ->
       ep[c] = srvinc;
#ifndef MUT_NO_RESEND
       k = 0;
       do
       :: k < NK ->
          if :: req[KC(k,c)] != NONE -> SENDUP(c, REQ, k, req[KC(k,c)], reqnq[KC(k,c)]) :: else -> skip fi;
          k++
       :: else -> break
       od;
       if :: leaving[c] -> SENDUP(c, FW, 0, 0, 0) :: else -> skip fi;
#endif
       /* onNewServer: drop invalidations of the dead server that have not started */
       k = 0;
       do
       :: k < NK ->
          if
          :: iqn[KC(k,c)] > 0 && !iqprog[KC(k,c)] -> iqn[KC(k,c)] = 0; iqearly[KC(k,c)*2] = 0; iqearly[KC(k,c)*2+1] = 0
          :: iqn[KC(k,c)] > 1 && iqprog[KC(k,c)] -> iqn[KC(k,c)] = 1; iqearly[KC(k,c)*2+1] = 0
          :: else -> skip
          fi;
          make_progress(c, k);
          k++
       :: else -> break
       od;
       /* the recovery report: every lock object, with the mode before an invalidation in progress (B7) */
       k = 0;
       do
       :: k < NK ->
          if
          :: obj[KC(k,c)] ->
             x = cm[KC(k,c)];
#ifndef MUT_RECOVER_LOWERED
             if :: invm[KC(k,c)] != NONE && !SATISFIES(x, invm[KC(k,c)]) -> x = invm[KC(k,c)] :: else -> skip fi;
#endif
             SENDUP(c, REP, k, x, seqc[KC(k,c)])
          :: else -> skip
          fi;
          k++
       :: else -> break
       od;
       SENDUP(c, REPEND, 0, 0, 0);
       check_all()
     }
  :: atomic {                                              /* close: shutdown, then farewell */
       LIVE(c) && c == FWC && !leaving[c] &&
       ts[TI(c,0)] == T_IDLE && tops[TI(c,0)] == 0 && (ntask < 2 || (ts[TI(c,1)] == T_IDLE && tops[TI(c,1)] == 0)) ->
       leaving[c] = 1;
       k = 0; do :: k < NK -> make_progress(c, k); k++ :: else -> break od;
       if :: ep[c] == srvinc -> SENDUP(c, FW, 0, 0, 0) :: else -> skip fi;
       check_all()
     }
  :: atomic { LIVE(c) && c == CRASHC && ccrashes < CCRASH -> ccrashes++; dead[c] = 1 }
  :: atomic { dead[c] && nempty(dn[c]) -> dn[c]?_,_,_,_ }   /* nobody listens */
  od
}

/* P8: when nothing can move, everything is done */
active proctype final() {
  byte c, k, t;
  timeout ->
  atomic {
    c = 0;
    do
    :: c < NC ->
       assert(len(up[c]) == 0 && (dead[c] || len(dn[c]) == 0));
       assert(dead[c] || gone[c] || !pendL[c]);
       if
       :: !dead[c] ->
          t = 0;
          do :: t < NT -> assert(ts[TI(c,t)] == T_IDLE && tops[TI(c,t)] == 0); t++ :: else -> break od;
          assert(c != FWC || left[c]);
          k = 0;
          do :: k < NK -> assert(left[c] || (req[KC(k,c)] == NONE && iqn[KC(k,c)] == 0)); k++ :: else -> break od
       :: else -> assert(gone[c])
       fi;
       c++
    :: else -> break
    od;
    assert(!recovering);
    k = 0;
    do :: k < NK -> assert(rqn[k] == 0); k++ :: else -> break od;
    c = 0;
    do :: c < NKC -> assert(!ginv[c]); c++ :: else -> break od
  }
}

init {
  byte i;
  atomic {
    i = 0;
    do
    :: i < NKC ->
       gm[i] = NONE; rqm[i] = NONE; invm[i] = NONE; req[i] = NONE; reqw[i] = NONE; cache[i] = NOCACHE;
       i++
    :: else -> break
    od;
    i = 0;
    do
    :: i < NC ->
       ep[i] = 1;
#ifdef ONLY
       tops[TI(i,0)] = (i == ONLY -> OPS : 0);  /* a focused configuration: only client ONLY works */
#else
       tops[TI(i,0)] = OPS;
#endif
       if :: i == 0 -> tops[TI(i,1)] = (NT0 > 1 -> tops[TI(i,0)] : 0) :: else -> skip fi;
       i++
    :: else -> break
    od;
    run client(0, NT0);
    i = 1;
    do :: i < NC -> run client(i, 1); i++ :: else -> break od
  }
}
