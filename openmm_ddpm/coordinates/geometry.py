"""Geometry of molecules in torch: angles, dihedrals, NeRF placement, chirality.

Pure functions on float64 tensors of positions (..., 3) in nm, angles in
rad; differentiable, so the Jacobians of ``internal.InternalCoordinates``
follow from them exactly (tests/test_internal.py checks them against
finite differences). Imports nothing of the package.
"""
import math

import numpy as np
import torch


def signed_volumes(positions, centres):
    """Signed volume (nm^3) of each chiral centre's three reference neighbours, (n, n_centres)."""
    if not centres:
        return positions.new_zeros(positions.shape[0], 0)
    centre = torch.tensor([c for c, _ in centres])
    a, b, c = (torch.tensor([n[m] for _, n in centres]) for m in range(3))
    origin = positions[:, centre]
    return torch.linalg.det(torch.stack([positions[:, a] - origin, positions[:, b] - origin, positions[:, c] - origin], dim=-1))


def largest_gap_midpoint(angles):
    """Middle (rad, in (-pi, pi]) of the largest circular gap between sorted angles."""
    ordered = np.sort(np.asarray(angles, dtype=float))
    if len(ordered) == 0:
        return -math.pi
    gaps = np.diff(np.concatenate([ordered, [ordered[0] + 2 * math.pi]]))
    widest = int(np.argmax(gaps))
    middle = ordered[widest] + 0.5 * gaps[widest]
    return float(math.remainder(middle, 2 * math.pi))


def bond_angle(a, b, c):
    """Angle at b (rad)."""
    u, v = a - b, c - b
    return torch.atan2(torch.linalg.norm(torch.cross(u, v, dim=-1), dim=-1), (u * v).sum(-1))


def dihedral(a, b, c, d):
    """Dihedral a-b-c-d in (-pi, pi] (IUPAC sign convention)."""
    b0, b1, b2 = a - b, c - b, d - c
    b1n = b1 / torch.linalg.norm(b1, dim=-1, keepdim=True)
    v = b0 - (b0 * b1n).sum(-1, keepdim=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdim=True) * b1n
    x = (v * w).sum(-1)
    y = (torch.cross(b1n, v, dim=-1) * w).sum(-1)
    return torch.atan2(y, x)


def place_atom(j, k, l, r, theta, phi):
    """Position of i with |i-j| = r, angle(i, j, k) = theta, dihedral(i, j, k, l) = phi (NeRF)."""
    bc = k - j
    bc = bc / torch.linalg.norm(bc, dim=-1, keepdim=True)
    normal = torch.cross(l - k, bc, dim=-1)
    normal = normal / torch.linalg.norm(normal, dim=-1, keepdim=True)
    m = torch.cross(normal, bc, dim=-1)
    r, theta, phi = r.unsqueeze(-1), theta.unsqueeze(-1), phi.unsqueeze(-1)
    return j + r * (torch.cos(theta) * bc + torch.sin(theta) * (torch.sin(phi) * normal - torch.cos(phi) * m))


def wrap_angle(angles):
    """Angles into (-pi, pi]."""
    return math.pi - torch.remainder(math.pi - angles, 2 * math.pi)


def plane_point(frame):
    """A point that puts atom 2 on the same side of the 0-1 axis as in the frame.

    With dihedral pi about (2, j, k, l), atom 2 lies in the plane of j, k, l
    on the side opposite to l; so l is the reflection of the frame's atom 2
    through the 0-1 axis.
    """
    x0, x1, x2 = frame[:, 0], frame[:, 1], frame[:, 2]
    axis = (x1 - x0) / torch.linalg.norm(x1 - x0, dim=-1, keepdim=True)
    relative = x2 - x0
    along = (relative * axis).sum(-1, keepdim=True) * axis
    return x0 + along - (relative - along)
