"""A residual MLP F_θ(x, c_noise, class, w) for data of any dimension, flattened to vectors."""

import torch
from torch import nn

from ..embedding import GuidanceEmbedding, noise_embedding
from ..guidance import unguided_labels


class ResidualBlock(nn.Module):
    """h + W₂·dropout(SiLU(W₁·SiLU(norm(h)) + E·emb))."""

    def __init__(self, width: int, embedding_width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.inner = nn.Linear(width, width)
        self.embedding = nn.Linear(embedding_width, width)
        self.dropout = nn.Dropout(dropout)
        self.outer = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        inner = self.inner(nn.functional.silu(self.norm(h))) + self.embedding(emb)
        return h + self.outer(self.dropout(nn.functional.silu(inner)))


class MLP(nn.Module):
    """Residual MLP on flattened samples; the output has the input's shape. `num_classes` counts the class embeddings
    (with a null class, one more than the data's classes); `guidance_input` adds an embedding of the guidance scale w
    to the noise embedding (a guided CD/sCD student), and `null_at_zero` (the null class's index, or None) replaces
    the label wherever w = 0 (cd.unconditional_fraction)."""

    def __init__(
        self,
        dim: int,
        width: int = 256,
        depth: int = 4,
        embedding_dim: int = 64,
        embedding: str = "positional",
        fourier_scale: float = 16.0,
        num_classes: int = 0,
        dropout: float = 0.0,
        guidance_input: bool = False,
        null_at_zero: int | None = None,
    ) -> None:
        super().__init__()
        self.null_at_zero = null_at_zero
        self.embed_noise = noise_embedding(embedding, embedding_dim, fourier_scale)
        self.embed_class = nn.Embedding(num_classes, embedding_dim) if num_classes > 0 else None
        self.guidance_embedding = GuidanceEmbedding(embedding_dim, embedding_dim) if guidance_input else None
        self.embedding_mlp = nn.Sequential(
            nn.Linear(embedding_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU()
        )
        self.input = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, width, dropout) for _ in range(depth))
        self.output = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.embed_noise(c_noise)
        if self.embed_class is not None:
            if class_labels is None:
                raise ValueError("this network is class-conditional: pass class_labels")
            if guidance is not None and self.null_at_zero is not None:
                class_labels = unguided_labels(class_labels, guidance, self.null_at_zero)
            emb = emb + self.embed_class(class_labels)
        if (guidance is None) != (self.guidance_embedding is None):
            raise ValueError("pass the guidance scale w exactly when the network takes it (guidance_input)")
        if self.guidance_embedding is not None:
            emb = emb + self.guidance_embedding(guidance)
        emb = self.embedding_mlp(emb)
        h = self.input(x.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.output(h).reshape(x.shape)
