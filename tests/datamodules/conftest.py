"""Shared fixtures for the datamodule tests: tiny real-format datasets written once per session."""

from __future__ import annotations

import pytest

from tests import fakedata


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory) -> str:
    return fakedata.write_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory) -> str:
    return fakedata.write_cifar100(tmp_path_factory.mktemp("cifar100"))


@pytest.fixture(scope="session")
def imagenet_dir(tmp_path_factory) -> str:
    return fakedata.write_imagenet(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> str:
    return fakedata.write_mnist(tmp_path_factory.mktemp("mnist"), n_train=40, n_test=10)
