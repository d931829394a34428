//! The comparative loss (Zhu et al., arXiv 2301.03765) and task losses, generic over the Burn
//! backend. Empty in this step; filled by the comparative-loss issue.
