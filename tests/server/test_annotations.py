"""Annotations through the real client: bulk round trip, validation, filters, masks, concurrency."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from cytomine import Cytomine
from cytomine.models import Annotation, AnnotationCollection, ImageInstance, PropertyCollection

from cyseg.server.runner import Endpoint

from .helpers import PNG_NAME, PYRAMID_NAME, read_picture


def square(x: float, y: float, size: float) -> str:
    return f"POLYGON (({x} {y}, {x + size} {y}, {x + size} {y + size}, {x} {y + size}, {x} {y}))"


def fetch_all(**filters) -> AnnotationCollection:
    return AnnotationCollection(showWKT=True, showTerm=True, showMeta=True, showGIS=True, **filters).fetch()


@pytest.fixture
def png_image(client: Cytomine, server: Endpoint) -> ImageInstance:
    """The generated PNG's image, emptied of annotations before each test."""
    image = ImageInstance().fetch(server.images[PNG_NAME])
    for annotation in fetch_all(image=image.id, includeAlgo=True):
        assert annotation.delete()
    return image


def test_two_thousand_annotations_round_trip(client: Cytomine, server: Endpoint) -> None:
    image = ImageInstance().fetch(server.images[PYRAMID_NAME])
    nucleus = server.terms["Nucleus"]
    sent = {}
    collection = AnnotationCollection()
    for index in range(2000):
        # Varied, non-round coordinates and a triangle now and then, so any rewriting would show.
        x, y = 3.25 + (index % 50) * 29.5, 7.5 + (index // 50) * 27.0
        wkt = square(x, y, 11.75) if index % 7 else f"POLYGON (({x} {y}, {x + 20} {y}, {x} {y + 9}, {x} {y}))"
        sent[wkt] = index
        collection.append(Annotation(location=wkt, id_image=image.id, id_terms=[nucleus]))
    assert collection.save()  # the client's default: chunks of 15, one thread per CPU

    back = fetch_all(image=image.id)
    assert len(back) == 2000
    assert {a.location for a in back} == set(sent)
    assert all(a.term == [nucleus] and a.image == image.id and a.project == server.project_id for a in back)
    assert all(a.user == client.current_user.id for a in back)
    # The client pages by itself (it computes total // max pages, so pick a divisor of the total).
    paged = AnnotationCollection(image=image.id, showWKT=True).fetch(max=400)
    assert sorted(a.id for a in paged) == sorted(a.id for a in back)
    first_square = square(3.25 + 29.5, 7.5, 11.75)
    one = Annotation().fetch(next(a.id for a in back if a.location == first_square))
    assert one.location == first_square
    assert (one.area, one.areaUnit) == (pytest.approx(11.75 ** 2 * 0.5 ** 2), "micron²")  # 0.5 µm/px


def test_an_array_is_answered_as_cytomine_core_does(client: Cytomine, png_image: ImageInstance) -> None:
    """Only a message naming the new ids, in order (ModelService.addMultiple), not the annotations."""
    batch = AnnotationCollection()
    batch.extend(Annotation(location=square(10 * i, 10, 5), id_image=png_image.id) for i in range(3))
    response = client._post("annotation.json", batch.to_json())
    stored = sorted(fetch_all(image=png_image.id), key=lambda a: a.id)
    assert [a.location for a in stored] == [square(10 * i, 10, 5) for i in range(3)]
    assert response.status_code == 200
    assert response.json() == {"message": f"userannotations {','.join(str(a.id) for a in stored)} added"}


def test_create_one_and_delete(client: Cytomine, server: Endpoint, png_image: ImageInstance) -> None:
    created = Annotation(location=square(10, 20, 30), id_image=png_image.id).save()
    assert created.id and created.location == square(10, 20, 30)
    assert created.area == 900 and created.areaUnit == "pixels²"
    assert created.centroid == {"x": 25, "y": 35}
    assert Annotation().fetch(created.id).image == png_image.id
    assert created.delete()
    assert Annotation().fetch(created.id) is False
    response = client._get(f"annotation/{created.id}.json", None)
    assert response.status_code == 404 and f"annotation {created.id} not found" in response.json()["message"]


@pytest.mark.parametrize("location, status, fragment", [
    ("POLYGON ((0 0, 10 0, 10", 400, "invalid WKT"),
    ("NOT WKT AT ALL", 400, "invalid WKT"),
    ("POLYGON EMPTY", 400, "empty geometry"),
    (square(320, 10, 20), 400, "outside image"),
    (square(-1, 10, 5), 400, "outside image"),
    (square(10, 250, 10), 400, "(0, 0, 333, 257)"),
    (42, 400, "must be a WKT string"),
])
def test_bad_geometry_is_refused(client: Cytomine, png_image: ImageInstance, location: object, status: int,
                                 fragment: str) -> None:
    response = client._post("annotation.json", f'{{"image": {png_image.id}, "location": {location!r}}}'
                            .replace("'", '"'))
    assert response.status_code == status
    assert fragment in response.json()["message"]


def test_a_bad_item_rejects_the_whole_batch(client: Cytomine, png_image: ImageInstance) -> None:
    batch = AnnotationCollection()
    batch.append(Annotation(location=square(1, 1, 5), id_image=png_image.id))
    batch.append(Annotation(location=square(1000, 1, 5), id_image=png_image.id))
    response = client._post("annotation.json", batch.to_json())
    assert response.status_code == 400 and "annotation[1]" in response.json()["message"]
    assert len(fetch_all(image=png_image.id)) == 0


def test_unknown_references_are_404(client: Cytomine, server: Endpoint, png_image: ImageInstance) -> None:
    unknown_image = client._post("annotation.json", f'{{"image": 999999, "location": "{square(1, 1, 2)}"}}')
    assert unknown_image.status_code == 404 and "999999" in unknown_image.json()["message"]
    unknown_term = client._post("annotation.json",
                                f'{{"image": {png_image.id}, "location": "{square(1, 1, 2)}", "term": [999998]}}')
    assert unknown_term.status_code == 404 and "term 999998" in unknown_term.json()["message"]


def test_filters(client: Cytomine, server: Endpoint, png_image: ImageInstance) -> None:
    nucleus, roi = server.terms["Nucleus"], server.terms["ROI"]
    batch = AnnotationCollection()
    batch.extend([Annotation(location=square(10 * i, 10, 5), id_image=png_image.id,
                             id_terms=[nucleus if i % 2 else roi]) for i in range(6)])
    assert batch.save()
    assert len(fetch_all(image=png_image.id, term=nucleus)) == 3
    assert len(fetch_all(image=png_image.id, terms=[nucleus, roi])) == 6
    assert len(fetch_all(image=png_image.id, user=client.current_user.id)) == 6
    assert len(fetch_all(project=server.project_id, images=[png_image.id])) == 6
    page = AnnotationCollection(image=png_image.id, max=4, offset=4).fetch()
    assert len(page) == 2 and page._total == 6
    plain = AnnotationCollection(image=png_image.id).fetch()[0]
    assert not hasattr(plain, "location") or plain.location is None  # only with showWKT


def test_masks_have_cytomine_orientation(client: Cytomine, png_image: ImageInstance, tmp_path: Path) -> None:
    """A triangle with its right angle at the bottom-left (Cytomine y up) is at the bottom-left of the mask."""
    height = png_image.height
    triangle = Annotation(location="POLYGON ((40 20, 140 20, 40 120, 40 20))", id_image=png_image.id).save()
    assert png_image.window(0, 0, 200, height, dest_pattern=str(tmp_path / "mask.png"), mask=True,
                            annotations=[triangle.id])
    mask = read_picture(tmp_path / "mask.png") > 0
    rows, columns = np.nonzero(mask)
    assert rows.min() == pytest.approx(height - 120, abs=1) and rows.max() == pytest.approx(height - 20, abs=1)
    assert columns.min() == pytest.approx(40, abs=1) and columns.max() == pytest.approx(140, abs=1)
    bottom_row, top_row = mask[height - 22], mask[height - 118]
    assert bottom_row.sum() > 90 and top_row.sum() < 10  # wide at y=20 (bottom), narrow at y=120
    assert mask.sum() == pytest.approx(5000, rel=0.05)

    assert triangle.dump(str(tmp_path / "crop.png"))
    assert read_picture(tmp_path / "crop.png").shape == (100, 100, 3)
    assert triangle.dump(str(tmp_path / "alpha.png"), mask=True, alpha=True)
    alpha = read_picture(tmp_path / "alpha.png")
    assert alpha.shape == (100, 100, 4) and alpha[5, 95, 3] == 0 and alpha[95, 5, 3] == 255


def test_concurrent_uploads_lose_and_duplicate_nothing(client: Cytomine, png_image: ImageInstance) -> None:
    threads_count, per_thread = 8, 150
    errors: list[BaseException] = []

    def upload(worker: int) -> None:
        try:
            batch = AnnotationCollection()
            batch.extend([Annotation(location=square(worker * 40 + 0.5 * (i % 60), 0.5 * (i // 60) + 1, 1),
                                     id_image=png_image.id) for i in range(per_thread)])
            assert batch.save(chunk=10, n_workers=2)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=upload, args=(w,)) for w in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    back = fetch_all(image=png_image.id)
    assert len(back) == threads_count * per_thread
    assert len({a.location for a in back}) == threads_count * per_thread
    assert len({a.id for a in back}) == threads_count * per_thread


def test_properties_of_many_annotations_in_one_request_and_their_positions(client: Cytomine,
                                                                          png_image: ImageInstance) -> None:
    """Cytomine core's bulk form (an array whose items name their own annotation), all stored or none, and
    the positions and values of a user's annotations that have a key."""
    collection = AnnotationCollection()
    collection.extend(Annotation(location=square(10 + 20 * i, 5, 8), id_image=png_image.id) for i in range(3))
    assert collection.save(chunk=None)
    stored = sorted(fetch_all(image=png_image.id), key=lambda a: a.id)
    kind, first = stored[0].class_, stored[0].id
    items = [{"domainClassName": kind, "domainIdent": a.id, "key": "score", "value": str(i)}
             for i, a in enumerate(stored)]
    answer = client.post(f"domain/{kind}/{first}/property.json", json.dumps(items))
    properties = [PropertyCollection(a).fetch() for a in stored]
    assert [[(p.key, p.value) for p in found] for found in properties] == [
        [("score", "0")], [("score", "1")], [("score", "2")]]
    assert answer == {"message": f"propertys {','.join(str(found[0].id) for found in properties)} added"}
    bad = [{"domainClassName": kind, "domainIdent": first, "key": "other", "value": "x"},
           {"domainClassName": kind, "domainIdent": 999999, "key": "other", "value": "x"}]
    assert client.post(f"domain/{kind}/{first}/property.json", json.dumps(bad)) is False
    assert [p.key for p in PropertyCollection(stored[0]).fetch()] == ["score"]
    positions = client.get(f"user/{client.current_user.id}/imageinstance/{png_image.id}/annotationposition.json",
                           {"key": "score"})["collection"]
    assert [(p["idAnnotation"], p["x"], p["y"], p["value"]) for p in positions] == [
        (a.id, 14 + 20 * i, 9, str(i)) for i, a in enumerate(stored)]
    assert client.get(f"user/{client.current_user.id}/imageinstance/{png_image.id}/annotationposition.json",
                      {"key": "absent"})["collection"] == []
