"""An independent PyTorch implementation of the ICTP model (float64).

Written from docs/ictp-checkpoint.md (sections 1-4) alone, as the oracle for
Tessera's ICTP model: it loads a model given as a state_dict saved as `.npz`
(the authors' key names, aliases allowed) with a `.json` of the same stem
whose "config" member holds the run configuration, and computes the energy,
the forces by autograd and the stress.

`random_model` writes such a pair with random weights for any configuration,
so that tests can cover many of them.
"""

import itertools
import json
import math
import os

import numpy as np
import torch

SILU_SCALE = 1.6765324703310907

# ictp-checkpoint.md section 3: candidate (l1, l2) pairs per output rank.
PAIRS_ALWAYS = {
    0: [(0, 0), (1, 1), (2, 2), (3, 3)],
    1: [(1, 0), (2, 1), (3, 2)],
    2: [(2, 0), (1, 1), (2, 2), (3, 3), (3, 1)],
    3: [(3, 0), (2, 1), (3, 2)],
}
PAIRS_FULL_ONLY = {
    0: [],
    1: [(0, 1), (1, 2), (2, 3)],
    2: [(0, 2), (1, 3)],
    3: [(0, 3), (1, 2), (2, 3)],
}

SYMBOLS = ("X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu "
           "Zn Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La "
           "Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At "
           "Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh "
           "Fl Mc Lv Ts Og").split()


def pairs(l3, l1max, l2max, full):
    """The (l1, l2) pairs that reach rank l3, in table order."""
    cand = PAIRS_ALWAYS[l3] + (PAIRS_FULL_ONLY[l3] if full else [])
    return [(a, b) for a, b in cand if a <= l1max and b <= l2max]


def dfact(n):
    """Double factorial with (-1)!! = 1."""
    return 1 if n <= 0 else n * dfact(n - 2)


def product_constant(l1, l2, l3):
    k = (l1 + l2 - l3) // 2
    a = (l2 + l3 - l1) // 2
    b = (l1 + l3 - l2) // 2
    c = k
    num = math.factorial(l1) * math.factorial(l2) * dfact(2 * l3 - 1) * math.factorial(
        a) * math.factorial(b)
    den = (math.factorial(l3) * dfact(2 * a - 1) * dfact(2 * b - 1) * dfact(2 * c - 1) *
           math.factorial(a + b + c))
    return num / den


def ict(n, l):
    """T^l(n) for unit vectors n [E, 3]: [E, 3, ..., 3] (l axes)."""
    eye = torch.eye(3, dtype=n.dtype)
    if l == 0:
        return torch.ones(n.shape[0], dtype=n.dtype)
    if l == 1:
        return n
    if l == 2:
        return 1.5 * (torch.einsum("ei,ej->eij", n, n) - eye / 3.0)
    if l == 3:
        nnn = torch.einsum("ei,ej,ek->eijk", n, n, n)
        dn = (torch.einsum("ij,ek->eijk", eye, n) + torch.einsum("jk,ei->eijk", eye, n) +
              torch.einsum("ki,ej->eijk", eye, n))
        return 2.5 * (nnn - dn / 5.0)
    raise ValueError("the authors' model supports ranks up to 3")


def stf(m, l):
    """Symmetric traceless part of rank-l tensors m [E, 3, ..., 3, C] (l <= 3)."""
    if l < 2:
        return m
    eye = torch.eye(3, dtype=m.dtype)
    axes = list(range(1, l + 1))
    perms = list(itertools.permutations(axes))
    s = sum(m.permute(0, *p, l + 1) for p in perms) / len(perms)
    if l == 2:
        tr = torch.einsum("eiic->ec", s)
        return s - torch.einsum("ij,ec->eijc", eye, tr) / 3.0
    tr = torch.einsum("eiikc->ekc", s)
    return s - (torch.einsum("ij,ekc->eijkc", eye, tr) + torch.einsum("ik,ejc->eijkc", eye, tr) +
                torch.einsum("jk,eic->eijkc", eye, tr)) / 5.0


def ict_product(x, l1, y, l2, l3):
    """x [E, 3^(l1 axes), C] times y [E, 3^(l2 axes), C] on the path to l3."""
    k = (l1 + l2 - l3) // 2
    letters = "abcdefghijklmnopq"
    xi = letters[:l1 - k] + letters[10:10 + k]
    yi = letters[10:10 + k] + letters[l1 - k:l1 - k + l2 - k]
    out = letters[:l1 - k] + letters[l1 - k:l1 - k + l2 - k]
    m = torch.einsum("z%sy,z%sy->z%sy" % (xi, yi, out), x, y)
    if l1 > k and l2 > k and l3 >= 2:
        m = math.comb(l3, l1 - k) * stf(m, l3)
    return product_constant(l1, l2, l3) * m


def silu(x):
    return SILU_SCALE * x * torch.sigmoid(x)


def lin(x, w):
    """Lin(x; W) on the last axis: y = x W^T / sqrt(in)."""
    return torch.matmul(x, w.t()) / math.sqrt(w.shape[1])


def mlp(x, weights):
    for i, w in enumerate(weights):
        x = lin(x, w)
        if i + 1 < len(weights):
            x = silu(x)
    return x


class Model:
    """An ICTP model: config dict (ictp-checkpoint.md section 1) + state_dict."""

    def __init__(self, config, state):
        self.cfg = config
        self.state = {k: torch.as_tensor(np.asarray(v), dtype=torch.float64)
                      for k, v in state.items()}
        types = config.get("atomic_types")
        if types is None:
            self.types = list(range(119))
        else:
            self.types = [SYMBOLS.index(t) if isinstance(t, str) else int(t) for t in types]
        self.S = len(self.types)

    def w(self, key):
        if key in self.state:
            return self.state[key]
        head, _, tail = key.rpartition(".weight.")
        alias = "%s.blocks.%s.weight" % (head, tail)
        if tail.isdigit() and alias in self.state:
            return self.state[alias]
        raise KeyError(key)

    def mlp_weights(self, prefix):
        out, i = [], 0
        while "%s.%d.weight" % (prefix, i) in self.state:
            out.append(self.state["%s.%d.weight" % (prefix, i)])
            i += 2
        return out

    def species_index(self, numbers):
        return torch.tensor([self.types.index(int(z)) for z in numbers], dtype=torch.int64)

    def energy(self, numbers, positions, cell, pbc, strain=None, per_atom=False):
        """Total energy (and per-atom energies) of one structure, differentiable in
        positions and strain (v -> v (I + strain))."""
        cfg = self.cfg
        rc = float(cfg["r_cutoff"])
        F = int(cfg["n_hidden_feats"])
        T = int(cfg["n_interactions"])
        Lh = int(cfg["l_max_hidden_feats"])
        Le = int(cfg["l_max_edge_attrs"])
        nu = int(cfg["correlation"])
        sym = bool(cfg["symmetric_product"])
        coupled = bool(cfg["coupled_product_feats"])
        avg = float(cfg["avg_n_neighbors"])
        p = int(cfg["n_polynomial_cutoff"])
        nb = int(cfg["n_basis"])
        S = self.S
        R = "representation."
        s = self.species_index(numbers)
        n = len(numbers)
        recv, send, shifts = neighbor_list(positions.detach().numpy(), cell, pbc, rc)
        recv = torch.as_tensor(recv)
        send = torch.as_tensor(send)
        cell_t = torch.as_tensor(np.asarray(cell, dtype=np.float64))
        v = positions[recv] - positions[send] - torch.as_tensor(shifts, dtype=torch.float64) @ cell_t
        if strain is not None:
            v = v @ (torch.eye(3, dtype=torch.float64) + strain)
        r = torch.linalg.norm(v, dim=1)
        nvec = v / r[:, None]
        # radial basis
        w_n = torch.arange(1, nb + 1, dtype=torch.float64) * math.pi / rc
        x = r / rc
        fcut = (1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x**(p + 1) -
                p * (p + 1) / 2 * x**(p + 2))
        fcut = torch.where(r < rc, fcut, torch.zeros_like(fcut))
        rho = math.sqrt(2.0 / rc) * torch.sin(w_n[None, :] * r[:, None]) / r[:, None] * fcut[:, None]
        Y = [ict(nvec, l) for l in range(Le + 1)]
        Y = [y.reshape(y.shape + (1,)) for y in Y]  # channel axis of 1
        Y[0] = Y[0].reshape(-1, 1)
        # embedding: h[l] has shape [n, 3, ..., 3 (l axes), F]
        h = [self.state[R + "node_embedding.weight.0"][:, s].t() / math.sqrt(S)]
        e_total = torch.zeros(n, dtype=torch.float64)
        for t in range(T):
            I = R + "interactions.%d." % t
            L_in = 0 if t == 0 else Lh
            L_out = 0 if t == T - 1 else Lh
            sc = []
            for l in range(L_out + 1):
                if l <= L_in:
                    W = self.w(I + "skip_tp.weight.%d" % l)  # (F, S, F)
                    Ws = W[:, s, :]  # (F, n, F): [c, a, d]
                    sc.append(torch.einsum("a...c,cad->a...d", h[l], Ws) / math.sqrt(F * S))
                else:
                    sc.append(torch.zeros((n,) + (3,) * l + (F,), dtype=torch.float64))
            g = [lin(h[l], self.w(I + "linear_first.weight.%d" % l)) for l in range(L_in + 1)]
            radial = mlp(rho, self.mlp_weights(I + "conv_tp_weights"))
            paths = [pairs(l3, L_in, Le, True) for l3 in range(Le + 1)]
            radial = radial.reshape(len(r), sum(len(ps) for ps in paths), F)
            A = []
            q = 0
            for l3 in range(Le + 1):
                stack = []
                for (l1, l2) in paths[l3]:
                    gj = g[l1][send]
                    msg = ict_product(gj, l1, Y[l2], l2, l3)
                    msg = msg * radial[:, q, :].reshape((len(r),) + (1,) * l3 + (F,))
                    q += 1
                    m = torch.zeros((n,) + msg.shape[1:], dtype=torch.float64)
                    m = m.index_add(0, recv, msg) / math.sqrt(len(paths[l3]))
                    stack.append(m)
                stacked = torch.cat(stack, dim=-1)  # feature index p*F + c
                A.append(lin(stacked, self.w(I + "linear_second.weight.%d" % l3)) / avg)
            # product basis
            Q = R + "products.%d.product_basis." % t

            def weigh(X, l, key):
                W = self.w(key)[s]  # (n, G, P) or (n, G*P, G)
                if coupled:
                    Xf = X.reshape(X.shape[:-2] + (-1,))  # v = c*P + p
                    return torch.einsum("a...v,avu->a...u", Xf, W)
                return torch.einsum("a...cp,acp->a...c", X, W)

            B = [weigh(A[l][..., None], l, Q + "weighted_sum.weight.%d" % l)
                 for l in range(L_out + 1)]
            X = [a[..., None] for a in A]  # [n, 3.., G, P]
            for i in range(nu - 1):
                target = L_out if i == nu - 2 else Le
                top = len(X) - 1
                Xn = []
                for l3 in range(target + 1):
                    parts = []
                    for (l1, l2) in pairs(l3, top, Le, not (sym and i == 0)):
                        P1 = X[l1].shape[-1]
                        G_ = X[l1].shape[-2]
                        xa = X[l1].reshape(X[l1].shape[:-2] + (G_ * P1,))  # channel = c*P1 + p
                        ya = A[l2].repeat_interleave(P1, dim=-1)
                        z = ict_product(xa, l1, ya, l2, l3)
                        parts.append(z.reshape(z.shape[:-1] + (G_, P1)))
                    Xn.append(torch.cat(parts, dim=-1))
                X = Xn
                for l in range(L_out + 1):
                    B[l] = B[l] + weigh(X[l], l, Q + "blocks.%d.weighted_sum.weight.%d" % (i, l))
            h = [lin(B[l], self.w(R + "products.%d.linear.weight.%d" % (t, l))) + sc[l]
                 for l in range(L_out + 1)]
            if t < T - 1:
                e_total = e_total + lin(h[0], self.state["readouts.%d.weight" % t])[:, 0]
            else:
                e_total = e_total + mlp(h[0], self.mlp_weights("readouts.%d" % t))[:, 0]
        scale = self.state["scale_shift.scale_params"][s]
        shift = self.state["scale_shift.shift_params"][s]
        e_atoms = scale * e_total + shift
        if per_atom:
            return e_atoms.sum(), e_atoms
        return e_atoms.sum()

    def evaluate(self, numbers, positions, cell=None, pbc=(False, False, False), stress=False):
        """Energy, forces, per-atom energies and (if asked) stress = (1/V) dE/d(strain)."""
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        pos = torch.tensor(np.asarray(positions, dtype=np.float64), requires_grad=True)
        strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
        e, ea = self.energy(numbers, pos, cell, pbc, strain=strain, per_atom=True)
        gpos, gstrain = torch.autograd.grad(e, [pos, strain])
        out = {"energy": float(e), "forces": -gpos.numpy(), "energies": ea.detach().numpy()}
        if stress:
            vol = abs(np.linalg.det(cell))
            g = gstrain.numpy()
            out["stress"] = 0.5 * (g + g.T) / vol
        return out


def neighbor_list(positions, cell, pbc, rc):
    """Brute force: every (i, j, S) with |r_j + S cell - r_i| < rc, i = j kept when S != 0."""
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    reps = [0, 0, 0]
    if any(pbc):
        inv = np.linalg.inv(cell)
        for k in range(3):
            if pbc[k]:
                height = 1.0 / np.linalg.norm(inv[:, k])
                reps[k] = int(math.ceil(rc / height)) + 1
    shifts = np.array(list(itertools.product(*[range(-m, m + 1) for m in reps])), dtype=np.int64)
    recv, send, shf = [], [], []
    n = len(positions)
    for i in range(n):
        for j in range(n):
            d = positions[j][None, :] + shifts @ cell - positions[i][None, :]
            dist = np.linalg.norm(d, axis=1)
            for sidx in np.nonzero(dist < rc)[0]:
                if i == j and not shifts[sidx].any():
                    continue
                recv.append(i)
                send.append(j)
                shf.append(shifts[sidx])
    return (np.array(recv, dtype=np.int64), np.array(send, dtype=np.int64),
            np.array(shf, dtype=np.int64).reshape(-1, 3))


def load(path):
    """Loads MODEL.npz with MODEL.json beside it."""
    stem = path[:-4] if path.endswith(".npz") else path
    with open(stem + ".json") as f:
        config = json.load(f)["config"]
    with np.load(stem + ".npz") as z:
        state = {k: z[k] for k in z.files}
    return Model(config, state)


def default_config(**kw):
    cfg = {
        "atomic_types": [1, 6, 8],
        "n_species": 3,
        "r_cutoff": 5.0,
        "n_basis": 8,
        "n_polynomial_cutoff": 5,
        "radial_MLP": [64, 64, 64],
        "readout_MLP": [16],
        "n_hidden_feats": 32,
        "n_product_feats": 32,
        "n_interactions": 2,
        "l_max_hidden_feats": 2,
        "l_max_edge_attrs": 3,
        "correlation": 3,
        "symmetric_product": True,
        "coupled_product_feats": False,
        "avg_n_neighbors": 10.0,
        "default_dtype": "float64",
    }
    cfg.update(kw)
    return cfg


def random_state(cfg, seed=0, aliases=True):
    """A state_dict with random weights and the authors' key names and shapes."""
    rng = np.random.default_rng(seed)
    S = len(cfg["atomic_types"]) if cfg["atomic_types"] is not None else 119
    F = cfg["n_hidden_feats"]
    G = cfg["n_product_feats"]
    T = cfg["n_interactions"]
    Lh = cfg["l_max_hidden_feats"]
    Le = cfg["l_max_edge_attrs"]
    nu = cfg["correlation"]
    rc = float(cfg["r_cutoff"])
    nb = cfg["n_basis"]
    R = "representation."
    st = {}

    def put(key, shape, alias=False):
        st[key] = rng.standard_normal(shape)
        if alias and aliases:
            head, _, tail = key.rpartition(".weight.")
            st["%s.blocks.%s.weight" % (head, tail)] = st[key]

    def put_mlp(prefix, widths):
        for i in range(len(widths) - 1):
            put("%s.%d.weight" % (prefix, 2 * i), (widths[i + 1], widths[i]))

    put(R + "node_embedding.weight.0", (F, S))
    st[R + "radial_embedding.bessel_fn.bessel_weights"] = np.arange(1, nb + 1) * math.pi / rc
    st[R + "radial_embedding.bessel_fn.r_cutoff"] = np.array(rc)
    st[R + "radial_embedding.bessel_fn.pre_factor"] = np.array(math.sqrt(2.0 / rc))
    st[R + "radial_embedding.cutoff_fn.p"] = np.array(float(cfg["n_polynomial_cutoff"]))
    st[R + "radial_embedding.cutoff_fn.r_cutoff"] = np.array(rc)
    for t in range(T):
        I = R + "interactions.%d." % t
        L_in = 0 if t == 0 else Lh
        L_out = 0 if t == T - 1 else Lh
        for l in range(min(L_in, L_out) + 1):
            put(I + "skip_tp.weight.%d" % l, (F, S, F), alias=True)
        for l in range(L_in + 1):
            put(I + "linear_first.weight.%d" % l, (F, F), alias=True)
        npaths = [len(pairs(l3, L_in, Le, True)) for l3 in range(Le + 1)]
        put_mlp(I + "conv_tp_weights", [nb] + list(cfg["radial_MLP"]) + [sum(npaths) * F])
        st[I + "conv_tp.weight"] = np.zeros((0,))
        st[I + "linear_first.eye"] = np.eye(3)
        for l3 in range(Le + 1):
            put(I + "linear_second.weight.%d" % l3, (G, F * npaths[l3]), alias=True)
        Q = R + "products.%d.product_basis." % t

        def put_w(key, P):
            shape = (S, G * P, G) if cfg["coupled_product_feats"] else (S, G, P)
            put(key, shape, alias=True)
            st[key] /= P  # the authors scale product weights once at initialisation

        for l in range(L_out + 1):
            put_w(Q + "weighted_sum.weight.%d" % l, 1)
        P = [1] * (Le + 1)
        for i in range(nu - 1):
            target = L_out if i == nu - 2 else Le
            full = not (cfg["symmetric_product"] and i == 0)
            P = [sum(P[l1] for l1, l2 in pairs(l3, len(P) - 1, Le, full)) for l3 in
                 range(target + 1)]
            for l in range(L_out + 1):
                put_w(Q + "blocks.%d.weighted_sum.weight.%d" % (i, l), P[l])
        for l in range(L_out + 1):
            put(R + "products.%d.linear.weight.%d" % (t, l), (F, G), alias=True)
        if t < T - 1:
            put("readouts.%d.weight" % t, (1, F))
        else:
            put_mlp("readouts.%d" % t, [F] + list(cfg["readout_MLP"]) + [1])
    st["scale_shift.scale_params"] = np.full(S, 0.5 + rng.random())
    st["scale_shift.shift_params"] = rng.standard_normal(S)
    return st


def random_model(path_stem, cfg, seed=0, aliases=True, dtype=np.float64):
    """Writes path_stem.npz (random state_dict) and path_stem.json ({"config": cfg})."""
    st = random_state(cfg, seed, aliases)
    np.savez(path_stem + ".npz", **{k: np.asarray(v, dtype=dtype) for k, v in st.items()})
    with open(path_stem + ".json", "w") as f:
        json.dump({"config": cfg, "note": "random weights"}, f, indent=1)
    return path_stem + ".npz"


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        cfg = default_config(atomic_types=[1, 6, 7, 8], n_species=4)
        st = random_state(cfg, aliases=False)
        n_params = sum(v.size for k, v in st.items()
                       if "radial_embedding" not in k and "scale_shift" not in k)
        print("parameters (reference config: 111664):", n_params)
        m = load(random_model(os.path.join(d, "m"), cfg))
        rng = np.random.default_rng(1)
        pos = rng.random((5, 3)) * 3
        print(m.evaluate([1, 6, 8, 7, 1], pos))
