"""The finishing touches every sftlib figure shares: a title, axis labels with units, a light
grid, a legend. Not a plotting library: each figure is drawn where its data is."""

from __future__ import annotations


def finish_axes(ax, title: str, xlabel: str, ylabel: str, legend: bool = True) -> None:
    """Title, axis labels, grid and (optionally) legend; then a tight layout."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend:
        legend_if_labelled(ax)
    ax.figure.tight_layout()


def legend_if_labelled(ax, **kwargs) -> None:
    """A legend when the axes has labelled artists (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)
